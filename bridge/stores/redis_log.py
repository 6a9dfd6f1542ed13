"""The event log, webhook subscriptions, outbox and incoming webhook-ids of the Redis backend.

The event log is one capped stream (`bridge:events`, XADD MAXLEN ~ events_max) whose entry ids are
`{n}-0` with `n` from one counter, so every instance sees the same ids in the same order: an SSE
client resumes with `Last-Event-ID` on any instance. Each instance tails the stream and hands every
event to its listeners — events of jobs that ran on another instance included — and runs the
publish hooks (webhook deliveries to subscribers) only for the events it published itself. A
job's event ids are kept in a list of its own (`events:job:{job_id}`, its newest JOB_EVENTS),
so that its events are found without reading the stream.

Each instance keeps its pending deliveries in its own hash (`outbox:{consumer}`), so none is sent
twice by two living instances; the outbox of an instance that stopped living is adopted by the
next instance that asks for pending deliveries. Dead letters are shared (`dead`, indexed by
creation time in `dead:index`: a sorted set orders those of one time by id, as the embedded
listing does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from redis.exceptions import RedisError

from bridge.aio import backoff_s, stop_tasks
from bridge.events import Event, EventType
from bridge.stores.redis_db import BLOCK_MS, Command, Kind, RedisDb, key, num
from bridge.subscriptions import Subscription
from bridge.webhooks import Delivery

log = logging.getLogger(__name__)

SCAN_CHUNK = 500
MAX_SCAN = 20_000  # events looked at per `since` call, matching or not
ADOPT_CHUNK = 1000
IDLE_POLL_S = 0.25  # how often the tail notes the log's end while nobody listens
JOB_EVENTS = 200  # a job's newest event ids kept in its list (`events:job:{job_id}`)

# KEYS: stream; ARGV: cutoff (Unix s). Removes the events recorded before the cutoff.
TRIM_OLD = """
local removed = 0
for _ = 1, 50 do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 200)
  if #first == 0 then return removed end
  for _, entry in ipairs(first) do
    local fields, at = entry[2], nil
    for i = 1, #fields, 2 do if fields[i] == 't' then at = tonumber(fields[i + 1]) end end
    if at and at >= tonumber(ARGV[1]) then
      return removed + redis.call('XTRIM', KEYS[1], 'MINID', entry[1])
    end
  end
  local last = tonumber(string.match(first[#first][1], '^(%d+)'))
  removed = removed + redis.call('XTRIM', KEYS[1], 'MINID', (last + 1) .. '-0')
end
return removed
"""
# KEYS: the orphan's outbox, ours. Moves every delivery over.
ADOPT = """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do redis.call('HSET', KEYS[2], all[i], all[i + 1]) end
redis.call('DEL', KEYS[1])
return #all / 2
"""


def kinds(consumer: str, events_max: int, retention_s: float) -> tuple[Kind, ...]:
    outbox = key("outbox", consumer)
    cap = num(events_max)
    # A job's list of its event ids lives as long as the events would (renewed by each one).
    of_job = [num(JOB_EVENTS), num(max(1, int(retention_s)))]

    def write_event(
        commands: list[Command], _: str, event: tuple[bytes, float, str | None]
    ) -> None:
        body, at, job_id = event
        command: Command = ["EVENT", key("events"), key("events", "seq"), cap, body, consumer]
        command.append(num(at))
        if job_id is not None:
            command += [key("events", "job", job_id), *of_job]
        commands.append(command)

    def write_delivery(commands: list[Command], delivery_id: str, delivery: Delivery) -> None:
        record = delivery.model_dump_json()
        if delivery.state == "dead":
            commands.append(["HDEL", outbox, delivery_id])
            commands.append(["HSET", key("dead"), delivery_id, record])
            commands.append(["ZADD", key("dead", "index"), num(delivery.created_at), delivery_id])
        else:  # pending: new, retried, or a dead letter replayed
            commands.append(["HDEL", key("dead"), delivery_id])
            commands.append(["ZREM", key("dead", "index"), delivery_id])
            commands.append(["HSET", outbox, delivery_id, record])

    def delete_delivery(commands: list[Command], delivery_id: str) -> None:
        commands.append(["HDEL", outbox, delivery_id])
        commands.append(["HDEL", key("dead"), delivery_id])
        commands.append(["ZREM", key("dead", "index"), delivery_id])

    return (
        Kind("events", write_event),
        Kind("deliveries", write_delivery, delete_delivery),
    )


class RedisEventLog:
    def __init__(self, db: RedisDb, consumer: str, retention_s: float) -> None:
        self._db = db
        self._consumer = consumer
        self._retention_s = retention_s
        self._count = 0
        self._last_id = 0
        self._trim_old = db.redis.register_script(TRIM_OLD)
        self._tail: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._last_id = int(await self._db.redis.get(key("events", "seq")) or 0)

    @property
    def last_id(self) -> int:
        return self._last_id

    async def newest_id(self) -> int:
        return int(await self._db.redis.get(key("events", "seq")) or 0)

    async def published_here(self, after: int, until: int) -> list[Event]:
        """The events this instance published with ids in (after, until], oldest first."""
        me = self._consumer.encode()
        found: list[Event] = []
        start = f"({after}-0"
        while True:
            entries = await self._db.redis.xrange(
                key("events"), start, f"{until}-0", count=SCAN_CHUNK
            )
            found += [_event(i, fields) for i, fields in entries if fields[b"o"] == me]
            if len(entries) < SCAN_CHUNK:
                return found
            start = f"({entries[-1][0].decode()}"

    def append(self, type: EventType, fields: dict[str, Any]) -> str:
        """Into the next batch; the event gets its id there, and reaches listeners (here and
        on every instance) through the tail."""
        self._count += 1
        # `fields` come from typed records: JSON as they are (the tail adds the id).
        body = orjson.dumps({"type": type, **fields})
        self._db.put("events", str(self._count), (body, fields["at"], fields.get("job_id")))
        return str(self._count)

    def withdraw(self, key: str) -> None:
        self._db.withdraw("events", key)

    def start(self, deliver: Callable[[Event, bool], None], wanted: Callable[[bool], bool]) -> None:
        """Tail the log: every new event goes to `deliver(event, published_here)` — when
        `wanted(published_here)`; otherwise only its id is noted."""
        self._tail = asyncio.create_task(self._follow(deliver, wanted), name="events-tail")

    async def stop(self) -> None:
        if self._tail is not None:
            await stop_tasks([self._tail])

    async def _follow(
        self, deliver: Callable[[Event, bool], None], wanted: Callable[[bool], bool]
    ) -> None:
        me = self._consumer.encode()
        failures = 0
        while True:
            try:
                if not wanted(True):  # (anyone who would want an event from elsewhere too)
                    # Nobody here listens and no subscription wants events: note where the log
                    # is instead of reading every event (an SSE client replays from there).
                    self._last_id = int(await self._db.redis.get(key("events", "seq")) or 0)
                    await asyncio.sleep(IDLE_POLL_S)
                    continue
                found = await self._db.blocking.xread(
                    {key("events"): f"{self._last_id}-0"}, count=SCAN_CHUNK, block=BLOCK_MS
                )
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                log.debug("following the event log failed (%s)", exc)
                await asyncio.sleep(backoff_s(failures))
                continue
            for _, entries in found:
                for entry_id, fields in entries:
                    self._last_id = int(entry_id.split(b"-")[0])
                    here = fields[b"o"] == me
                    if wanted(here):
                        deliver(_event(entry_id, fields), here)

    async def since(
        self,
        after: int,
        *,
        types: Sequence[str] = (),
        workflow_id: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        await self._db.flush()
        wanted = frozenset(types)
        found: list[Event] = []
        start, scanned = f"({after}-0", 0
        while len(found) < limit and scanned < MAX_SCAN:
            entries = await self._db.redis.xrange(key("events"), start, "+", count=SCAN_CHUNK)
            for entry_id, fields in entries:
                event = _event(entry_id, fields)
                if (not wanted or event.type in wanted) and (
                    workflow_id is None or event.workflow_id == workflow_id
                ):
                    found.append(event)
                    if len(found) == limit:
                        break
            if len(entries) < SCAN_CHUNK:
                break
            scanned += len(entries)
            start = f"({entries[-1][0].decode()}"
        return found

    async def of_job(self, job_id: str, limit: int) -> list[Event]:
        """A job's newest `limit` events (at most JOB_EVENTS), oldest first: by the ids its
        list holds, each read from the stream (gone if trimmed from it since)."""
        await self._db.flush()
        ids = await self._db.redis.lrange(key("events", "job", job_id), -limit, -1)
        if not ids:
            return []
        async with self._db.redis.pipeline(transaction=False) as pipe:
            for n in ids:
                pipe.xrange(key("events"), f"{n.decode()}-0", f"{n.decode()}-0")
            found = await pipe.execute()
        return [_event(entry_id, fields) for entries in found for entry_id, fields in entries]

    async def purge(self, now: float) -> int:
        """Events older than the retention (the cap is kept by every append)."""
        return int(await self._trim_old(keys=[key("events")], args=[now - self._retention_s]))


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    body = orjson.loads(fields[b"b"])
    body["id"] = int(entry_id.split(b"-")[0])
    return Event.model_construct(**body)


class RedisSubscriptions:
    """In one hash; every instance reloads them now and then (`Subscriptions.load`)."""

    def __init__(self, db: RedisDb) -> None:
        self._db = db

    async def add(self, subscription: Subscription) -> None:
        await self._db.redis.hset(
            key("subscriptions"), subscription.id, subscription.model_dump_json()
        )

    async def all(self) -> list[Subscription]:
        found = await self._db.redis.hgetall(key("subscriptions"))
        subscriptions = [Subscription.model_validate_json(raw) for raw in found.values()]
        return sorted(subscriptions, key=lambda s: s.created_at)

    async def remove(self, subscription_id: str) -> bool:
        return bool(await self._db.redis.hdel(key("subscriptions"), subscription_id))


class RedisOutbox:
    def __init__(
        self,
        db: RedisDb,
        consumer: str,
        dead_retention_s: float,
        alive: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._db = db
        self._own = key("outbox", consumer)
        self._dead_retention_s = dead_retention_s
        self._alive = alive
        self._adopt = db.redis.register_script(ADOPT)

    def put(self, delivery: Delivery) -> None:
        self._db.put("deliveries", delivery.id, delivery)

    def done(self, delivery_id: str) -> None:
        self._db.remove("deliveries", delivery_id)

    async def flush(self) -> None:
        await self._db.flush()

    async def pending(self) -> list[Delivery]:
        """This instance's pending deliveries, with those of instances that stopped living."""
        await self._db.flush()
        async for outbox in self._db.redis.scan_iter(match=key("outbox", "*"), count=ADOPT_CHUNK):
            name = outbox.decode()
            if name != self._own and not await self._alive(name.rpartition(":")[2]):
                adopted = await self._adopt(keys=[name, self._own])
                log.info("took over %d undelivered webhook(s) of %s", adopted, name)
        found = await self._db.redis.hgetall(self._own)
        deliveries = [Delivery.model_validate_json(raw) for raw in found.values()]
        return sorted(deliveries, key=lambda d: d.created_at)

    async def dead_letters(
        self, limit: int, older_than: tuple[float, str] | None = None
    ) -> list[Delivery]:
        """Dead letters, newest first by (created_at, id); `older_than`: the (created_at, id) of
        the previous page's last."""
        await self._db.flush()
        index = key("dead", "index")
        if older_than is None:
            ids = await self._db.redis.zrevrangebyscore(index, "+inf", "-inf", 0, limit)
        else:
            at, after = older_than
            ids = await self._tied_before(at, after.encode(), limit) if after else []
            if len(ids) < limit:
                ids += await self._db.redis.zrevrangebyscore(
                    index, f"({num(at)}", "-inf", 0, limit - len(ids)
                )
        if not ids:
            return []
        found = await self._db.redis.hmget(key("dead"), ids)
        return [Delivery.model_validate_json(raw) for raw in found if raw]

    async def _tied_before(self, at: float, after: bytes, limit: int) -> list[bytes]:
        """Up to `limit` ids of the letters made at `at` that come after `after` (by id,
        descending, as Redis orders one score's members: byte by byte). Those before it are read
        past, a cost of how many letters were made in that one instant, not of all of them."""
        index, score, offset = key("dead", "index"), num(at), 0
        found: list[bytes] = []
        while len(found) < limit:
            tied = await self._db.redis.zrevrangebyscore(index, score, score, offset, SCAN_CHUNK)
            found += [letter_id for letter_id in tied if letter_id < after][: limit - len(found)]
            if len(tied) < SCAN_CHUNK:
                break
            offset += len(tied)
        return found

    async def get(self, delivery_id: str) -> Delivery | None:
        pending, delivery = self._db.pending("deliveries", delivery_id)
        if pending:
            return delivery  # type: ignore[no-any-return]
        for where in (self._own, key("dead")):
            raw = await self._db.redis.hget(where, delivery_id)
            if raw:
                return Delivery.model_validate_json(raw)
        return None

    async def count_dead(self) -> int:
        await self._db.flush()
        return int(await self._db.redis.zcard(key("dead", "index")))

    async def first_time(self, webhook_id: str) -> bool:
        return bool(
            await self._db.redis.set(
                key("inbound", webhook_id), 1, nx=True, ex=int(self._dead_retention_s)
            )
        )

    async def purge(self, now: float) -> int:
        """Dead letters past their retention (incoming webhook-ids expire by themselves)."""
        removed = 0
        while True:
            ids = await self._db.redis.zrangebyscore(
                key("dead", "index"), "-inf", now - self._dead_retention_s, 0, SCAN_CHUNK
            )
            if not ids:
                return removed
            async with self._db.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(key("dead"), *ids)
                pipe.zrem(key("dead", "index"), *ids)
                await pipe.execute()
            removed += len(ids)
