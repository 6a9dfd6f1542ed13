"""Queues on Redis Streams, shared by every instance on one Redis.

A queue is ten streams, one per priority level (`bridge:q:{queue}:{level}`), each read through
the consumer group `bridge`; an entry carries only a job id (the job is in the store). Taking
jobs is one Lua script (`TAKE`): it looks at the next undelivered entry of each level and hands out
the best by the same aging rule as the in-process queue — level plus one per `aging_s` waited, the
entry id's timestamp being its enqueue time — so a steady stream of urgent jobs never starves a
low one. When nothing waits, the taker blocks in XREAD … BLOCK on the streams from their last
delivered ids (nothing added meanwhile is missed) and takes again when something comes.

An entry is acknowledged and deleted (XACK + XDEL, with the job's outcome or its retry in the same
MULTI) only after its job is settled, so the streams hold nothing but waiting and running jobs:
there is no MAXLEN trimming that could drop an unacknowledged entry. While a job runs, its
instance renews the entry (XCLAIM … JUSTID resets its idle time) every third of the claim idle
time; an entry idle longer than that — its instance died or hangs — is claimed by another
instance (XCLAIM with min-idle-time, so only one wins) and run again there; after
MAX_INTERRUPTIONS cut runs it goes to the dead letters instead. Retries wait in one sorted set
(`bridge:q:delayed`) until a mover script puts them back. A consumer of a stopped instance is
deleted from the groups only once it holds no entry.

Only the instance holding a job's entry writes the job, so a cancel sent to any instance goes
through the entry (`WITHHOLD`): it records the request (`bridge:cancel:{job}`, for a day) and, if
the entry still waits (in its stream, undelivered, or in the delayed set), moves it into the
queue's cancel stream (`bridge:q:{queue}:cancel`) delivered to the asking instance, which then
holds it like a taken entry and settles the job cancelled. An entry held elsewhere is settled by
its holder: `TAKE` and a takeover flag an entry whose job has a request, and each instance asks
now and then which of its running jobs have one (`cancel_requests`). An asking instance that dies
leaves its cancel entry to be taken over like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import orjson
from redis.exceptions import RedisError, ResponseError

from bridge.aio import backoff_s, stop_tasks
from bridge.queues.base import MAX_PRIORITY, Entry, QueueFull
from bridge.stores.redis_db import BLOCK_MS, Command, Kind, RedisDb, key, num

log = logging.getLogger(__name__)

GROUP = "bridge"
DELAYED_INTERVAL_S = 0.2
MOVE_CHUNK = 500
CANCEL_REQUEST_TTL_S = 24 * 3600  # far longer than a takeover (BRIDGE_REDIS_CLAIM_IDLE_S ≤ 1 h)
SCAN_CHUNK = 1000  # entries WITHHOLD reads at a time while it looks for a waiting job

_LUA_HELPERS = """
local function last_delivered(stream, group)
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1]
      elseif info[i] == 'last-delivered-id' then last = info[i + 1] end
    end
    if name == group then return last end
  end
  redis.call('XGROUP', 'CREATE', stream, group, '0')  -- lost with a Redis that kept no data
  return '0-0'
end
local function next_undelivered(stream, group)
  if redis.call('XLEN', stream) == 0 then return nil end
  local after = last_delivered(stream, group)
  local found = redis.call('XRANGE', stream, '(' .. after, '+', 'COUNT', 1)
  if #found == 0 then return nil end
  return found[1][1]
end
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: the queue's streams, lowest level first; ARGV: group, consumer, count, aging_ms, the
# prefix of cancel requests. Returns {{level, entry id, job id, waited ms, cancel requested}, …},
# or {'wait', last delivered id per stream}.
TAKE = (
    _LUA_HELPERS
    + """
local group, consumer, count, aging = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local heads = {}
for level, stream in ipairs(KEYS) do heads[level] = next_undelivered(stream, group) end
local taken = {}
for _ = 1, count do
  local best, best_score = nil, nil
  for level = 1, #KEYS do
    local id = heads[level]
    if id then
      local score = level + (now - ms(id)) / aging
      if best == nil or score >= best_score then best, best_score = level, score end
    end
  end
  if best == nil then break end
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
                         'STREAMS', KEYS[best], '>')
  local entry = got[1][2][1]
  local requested = redis.call('EXISTS', ARGV[5] .. entry[2][2])
  table.insert(taken, {best - 1, entry[1], entry[2][2], now - ms(entry[1]), requested})
  local after = redis.call('XRANGE', KEYS[best], '(' .. entry[1], '+', 'COUNT', 1)
  if #after > 0 then heads[best] = after[1][1] else heads[best] = nil end
end
if #taken > 0 then return taken end
local ids = {'wait'}
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 1 then
    table.insert(ids, last_delivered(stream, group))
  else
    table.insert(ids, '0-0')
  end
end
return ids
"""
)

# KEYS: the queue's streams; ARGV: group. Returns {waiting, oldest wait ms, running}.
STATS = (
    _LUA_HELPERS
    + """
local now = now_ms()
local waiting, oldest, running = 0, 0, 0
for _, stream in ipairs(KEYS) do
  local length = redis.call('XLEN', stream)
  if length > 0 then
    local pending = redis.call('XPENDING', stream, ARGV[1])[1]
    running = running + pending
    waiting = waiting + length - pending
    local head = next_undelivered(stream, ARGV[1])
    if head then oldest = math.max(oldest, now - ms(head)) end
  end
end
return {waiting, oldest, running}
"""
)

# KEYS: the job's stream, the delayed set, the queue's cancel stream, the job's cancel request;
# ARGV: group, consumer, job id, its member of the delayed set, request TTL (s), scan chunk.
# Records the request; if the job's entry waits, moves it to the cancel stream, delivered to the
# consumer, and returns its id there (else nil). Reads the job's level up to its entry.
WITHHOLD = (
    _LUA_HELPERS
    + """
local group, consumer, job = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', KEYS[4], '1', 'EX', ARGV[5])
local found = redis.call('ZREM', KEYS[2], ARGV[4]) == 1
if not found and redis.call('EXISTS', KEYS[1]) == 1 then
  local after = last_delivered(KEYS[1], group)
  while not found do
    local chunk = redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', ARGV[6])
    if #chunk == 0 then break end
    for _, entry in ipairs(chunk) do
      if entry[2][2] == job then
        redis.call('XDEL', KEYS[1], entry[1])
        found = true
        break
      end
    end
    after = chunk[#chunk][1]
  end
end
if not found then return nil end
redis.pcall('XGROUP', 'CREATE', KEYS[3], group, '$', 'MKSTREAM')  -- made before: BUSYGROUP
redis.call('XADD', KEYS[3], '*', 'job', job)
local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', KEYS[3], '>')
return got[1][2][1][1]
"""
)

# KEYS[1]: the delayed set; ARGV: now (Unix s), chunk. Moves due retries to their streams.
MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local entry = cjson.decode(member)
  redis.call('XADD', entry[1], '*', 'job', entry[2])
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


def _xadd(commands: list[Command], job_id: str, stream: str) -> None:
    commands.append(["XADD", stream, "*", "job", job_id])


def _ack(commands: list[Command], ref: str, stream: str) -> None:
    entry_id = ref.rpartition(" ")[2]
    commands.append(["XACK", stream, GROUP, entry_id])
    commands.append(["XDEL", stream, entry_id])


def _delay(commands: list[Command], job_id: str, due: tuple[float, str]) -> None:
    commands.append(["ZADD", key("q", "delayed"), num(due[0]), due[1]])


def _release(commands: list[Command], ref: str, job: tuple[str, str]) -> None:
    stream, job_id = job
    _xadd(commands, job_id, stream)
    _ack(commands, ref, ref.partition(" ")[0])


# Writes that ride the backend's group commit (registered with the RedisDb).
KINDS = (
    Kind("enqueue", _xadd),
    Kind("delay", _delay),
    Kind("release", _release),
    Kind("ack", _ack),
)


class StreamQueue:
    def __init__(
        self, name: str, max_depth: int, aging_s: float, db: RedisDb, consumer: str
    ) -> None:
        self.name = name
        self.max_depth = max_depth
        self._aging_ms = aging_s * 1000
        self._db = db
        self._consumer = consumer
        self.streams = [key("q", name, str(level)) for level in range(MAX_PRIORITY + 1)]
        self.cancels = key("q", name, "cancel")  # entries withheld from running, being cancelled
        self._take = db.redis.register_script(TAKE)
        self._stats = db.redis.register_script(STATS)
        self._withhold = db.redis.register_script(WITHHOLD)
        self._buffer: deque[Entry] = deque()
        self._lock = asyncio.Lock()  # one taker at a time; the others wait for its haul
        self._waiting = 0  # callers of `get`: how many entries to take at once
        self.held: dict[str, Entry] = {}  # ref → entry taken by this instance, not settled yet
        self._depth = 0  # as of the last refresh, give or take what this instance did since
        self._changes = 0  # puts and takes here: a refresh that overlapped one is stale
        self._oldest_wait_s = 0.0
        self.running = 0  # across every instance, as of the last refresh
        self.paused: Callable[[], bool] = lambda: False  # a draining instance takes no new jobs

    @property
    def depth(self) -> int:
        return self._depth

    def oldest_wait_s(self) -> float:
        return self._oldest_wait_s

    def put(self, entry: Entry, *, force: bool = False) -> None:
        if not force and self._depth >= self.max_depth:
            raise QueueFull(self.name, self._depth)
        self._db.put("enqueue", entry.job_id, self._stream(entry.priority))
        self._depth += 1
        self._changes += 1

    def _stream(self, priority: int) -> str:
        return self.streams[min(max(priority, 0), MAX_PRIORITY)]

    async def get(self) -> Entry:
        self._waiting += 1
        try:
            async with self._lock:
                failures = 0
                while not self._buffer:
                    try:
                        await self._fill()
                        failures = 0
                    except (RedisError, OSError) as exc:
                        failures += 1
                        wait = backoff_s(failures)
                        log.debug(
                            "queue %r cannot take jobs (%s); again in %.1f s", self.name, exc, wait
                        )
                        await asyncio.sleep(wait)
                return self._buffer.popleft()
        finally:
            self._waiting -= 1

    async def _fill(self) -> None:
        if self.paused():
            await asyncio.sleep(BLOCK_MS / 1000)
            return
        taken = await self._take(
            keys=self.streams,
            args=[GROUP, self._consumer, max(self._waiting, 1), self._aging_ms, key("cancel", "")],
        )
        if taken and taken[0] == b"wait":
            ids = [raw.decode() for raw in taken[1:]]
            await self._db.blocking.xread(
                dict(zip(self.streams, ids, strict=True)), count=1, block=BLOCK_MS
            )
            return
        now = time.monotonic()
        self._depth = max(self._depth - len(taken), 0)
        self._changes += 1
        for level, entry_id, job_id, waited_ms, requested in taken:
            entry = Entry(
                job_id.decode(),
                level,
                enqueued_at=now - waited_ms / 1000,
                ref=f"{self.streams[level]} {entry_id.decode()}",
                cancel_requested=bool(requested),
            )
            self.held[entry.ref or ""] = entry
            self._buffer.append(entry)

    def ack(self, entry: Entry) -> None:
        assert entry.ref is not None
        self.held.pop(entry.ref, None)
        self._db.put("ack", entry.ref, entry.ref.partition(" ")[0])

    def abandon(self, entry: Entry) -> None:
        self.held.pop(entry.ref or "", None)

    def later(self, entry: Entry, delay_s: float) -> None:
        member = orjson.dumps([self._stream(entry.priority), entry.job_id]).decode()
        self._db.put("delay", entry.job_id, (time.time() + delay_s, member))

    def release(self, entry: Entry) -> bool:
        assert entry.ref is not None
        self.held.pop(entry.ref, None)
        stream = entry.ref.partition(" ")[0]
        if stream == self.cancels:  # nobody takes from there: back where TAKE finds it
            stream = self._stream(entry.priority)
        self._db.put("release", entry.ref, (stream, entry.job_id))
        return True

    async def withhold(self, job_id: str, priority: int) -> Entry | None:
        stream = self._stream(priority)
        delayed = orjson.dumps([stream, job_id]).decode()  # as `later` wrote it
        entry_id = await self._withhold(
            keys=[stream, key("q", "delayed"), self.cancels, key("cancel", job_id)],
            args=[GROUP, self._consumer, job_id, delayed, CANCEL_REQUEST_TTL_S, SCAN_CHUNK],
        )
        if entry_id is None:
            return None
        self._depth = max(self._depth - 1, 0)
        self._changes += 1
        entry = Entry(
            job_id, priority, ref=f"{self.cancels} {entry_id.decode()}", cancel_requested=True
        )
        self.held[entry.ref or ""] = entry
        return entry

    async def cancel_requests(self, job_ids: list[str]) -> set[str]:
        found = await self._db.redis.mget([key("cancel", job_id) for job_id in job_ids])
        return {job_id for job_id, value in zip(job_ids, found, strict=True) if value}

    def unstarted(self) -> list[Entry]:
        """Entries taken but not handed to a worker yet (a stop gives them back)."""
        entries = list(self._buffer)
        self._buffer.clear()
        return entries

    async def refresh(self) -> None:
        waiting, oldest_ms, running = await self._stats(keys=self.streams, args=[GROUP])
        self._depth, self._oldest_wait_s, self.running = (
            int(waiting),
            oldest_ms / 1000,
            int(running),
        )

    # ---- what keeps entries alive, and takes over those of dead instances --------------------

    async def renew(self) -> None:
        """Reset the idle time of every entry this instance holds."""
        by_stream: dict[str, list[str]] = {}
        for ref in list(self.held):
            stream, _, entry_id = ref.partition(" ")
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():
            await self._db.redis.xclaim(stream, GROUP, self._consumer, 0, ids, justid=True)

    async def reclaim(self, idle_ms: int) -> int:
        """Claim entries nobody renewed for `idle_ms`; they run here next."""
        claimed = 0
        for level, stream in [*enumerate(self.streams), (MAX_PRIORITY, self.cancels)]:
            try:
                stale = await self._db.redis.xpending_range(
                    stream, GROUP, min="-", max="+", count=100, idle=idle_ms
                )
            except ResponseError:  # no such stream or group yet
                continue
            for item in stale:
                if f"{stream} {item['message_id'].decode()}" in self.held:
                    continue  # renewed by this instance (or about to be)
                got = await self._db.redis.xclaim(
                    stream, GROUP, self._consumer, idle_ms, [item["message_id"]]
                )
                for entry_id, fields in got:
                    if not fields:
                        continue
                    job_id = fields[b"job"].decode()
                    log.warning(
                        "job %s of queue %r taken over from %s (idle %.0f s)",
                        job_id,
                        self.name,
                        item["consumer"].decode(),
                        item["time_since_delivered"] / 1000,
                    )
                    entry = Entry(
                        job_id,
                        level,
                        ref=f"{stream} {entry_id.decode()}",
                        deliveries=int(item["times_delivered"]) + 1,
                        cancel_requested=bool(await self._db.redis.exists(key("cancel", job_id))),
                    )
                    self.held[entry.ref or ""] = entry
                    self._buffer.appendleft(entry)
                    claimed += 1
        return claimed

    async def forget_consumers(self, alive: Callable[[str], Awaitable[bool]]) -> None:
        """Delete consumers of stopped instances that hold no entry any more."""
        for stream in [*self.streams, self.cancels]:
            try:
                consumers = await self._db.redis.xinfo_consumers(stream, GROUP)
            except ResponseError:
                continue
            for consumer in consumers:
                name = consumer["name"]
                name = name.decode() if isinstance(name, bytes) else name
                if consumer["pending"] == 0 and name != self._consumer and not await alive(name):
                    await self._db.redis.xgroup_delconsumer(stream, GROUP, name)


class StreamKeeper:
    """The instance's share of keeping the shared queues: marks itself alive, renews what it
    holds, takes over what dead instances held, moves due retries, drops dead consumers."""

    def __init__(self, db: RedisDb, consumer: str, queues: list[StreamQueue], idle_s: float):
        self._db = db
        self._consumer = consumer
        self._queues = queues
        self._idle_s = idle_s
        self._move_due = db.redis.register_script(MOVE_DUE)
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        for queue in self._queues:
            for stream in [*queue.streams, queue.cancels]:
                with contextlib.suppress(ResponseError):  # BUSYGROUP: made before
                    await self._db.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        await self._mark_alive()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep(), name="streams-keeper"),
            asyncio.create_task(self._delayed(), name="streams-delayed"),
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        with contextlib.suppress(RedisError, OSError):
            await self._db.redis.delete(key("alive", self._consumer))

    async def _mark_alive(self) -> None:
        await self._db.redis.set(key("alive", self._consumer), 1, px=int(self._idle_s * 1000))

    async def alive(self, consumer: str) -> bool:
        return bool(await self._db.redis.exists(key("alive", consumer)))

    async def tick(self) -> None:
        """One round: alive, renew, reclaim, clean up."""
        await self._mark_alive()
        for queue in self._queues:
            await queue.renew()
            await queue.reclaim(int(self._idle_s * 1000))
            await queue.forget_consumers(self.alive)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._idle_s / 3)
            try:
                await self.tick()
            except (RedisError, OSError) as exc:
                log.debug("keeping the queues failed (%s); next round soon", exc)

    async def move_due(self) -> int:
        moved = 0
        while True:
            count = int(
                await self._move_due(keys=[key("q", "delayed")], args=[time.time(), MOVE_CHUNK])
            )
            moved += count
            if count < MOVE_CHUNK:
                return moved

    async def _delayed(self) -> None:
        while True:
            await asyncio.sleep(DELAYED_INTERVAL_S)
            with contextlib.suppress(RedisError, OSError):
                await self.move_due()
