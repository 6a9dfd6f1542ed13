"""The job store and idempotency ledger of the Redis backend.

Keys (under `bridge:`): `job:{id}` (the record, JSON), `job:{id}:request` and `job:{id}:result`,
`idem:{key}` (the job id holding an idempotency key), `ledger:{key}` (a side effect's claim), and
the indexes, job ids scored by creation time: `wf:{workflow}` / `wfx:{workflow}:{execution}`,
and for `list_jobs` (`redis_listing`) `jobs:all`, `jobs:type:{processing_type}`,
`jobs:queue:{queue}`, `jobs:exec:{execution}` (written once, when the job is new) and
`jobs:status:{status}` (moved in the same script call as the record's status changes); and
`expiring` (jobs scored by when they expire: finished ones, and sync ones whose instance may die
mid-request). A finished job's keys get a TTL, so Redis drops them even when no bridge runs;
`purge_expired` keeps the indexes in step. Jobs stored by a bridge older than the `jobs:` indexes
are in none but a status set (once their status changes), until `redis_backfill` indexes them
at start-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from bridge.errors import Conflict
from bridge.jobs import JobRecord, JobStatus
from bridge.stores import redis_listing
from bridge.stores.base import (
    Data,
    JobFilter,
    LedgerEntry,
    decode_cursor,
    encode_cursor,
    with_report,
)
from bridge.stores.redis_db import Command, Kind, RedisDb, key, num

RESERVE_MS = 30_000  # how long an idempotency key waits for its job to be saved
UNFINISHED_SYNC_TTL_S = 24 * 3600  # a sync job whose instance died mid-request expires after this
PURGE_CHUNK = 500  # expired jobs per purge script call
LOOKUP_CHUNK = 500  # ledger keys per MGET
UNFINISHED = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
LIST_SCAN = 50  # extra index entries read per page, for ids whose job has expired

# Removes expired jobs from the indexes; KEYS[1] `expiring`; ARGV now, chunk, prefix. A member
# is [job_id, workflow_id, execution_id, processing_type, queue] (`_expiring_member`); those
# written before `list_jobs` have the first three only, and no entry in the type and queue sets.
PURGE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local jobs = ARGV[3] .. 'jobs:'
for _, member in ipairs(gone) do
  local job = cjson.decode(member)
  local id = job[1]
  local base = ARGV[3] .. 'job:' .. id
  if type(job[2]) == 'string' then
    redis.call('ZREM', ARGV[3] .. 'wf:' .. job[2], id)
    if type(job[3]) == 'string' then
      redis.call('ZREM', ARGV[3] .. 'wfx:' .. job[2] .. ':' .. job[3], id)
    end
  end
  redis.call('ZREM', jobs .. 'all', id)
  for _, status in ipairs({STATUSES}) do redis.call('ZREM', jobs .. 'status:' .. status, id) end
  if type(job[3]) == 'string' then redis.call('ZREM', jobs .. 'exec:' .. job[3], id) end
  if type(job[4]) == 'string' then redis.call('ZREM', jobs .. 'type:' .. job[4], id) end
  if type(job[5]) == 'string' then redis.call('ZREM', jobs .. 'queue:' .. job[5], id) end
  redis.call('UNLINK', base, base .. ':request', base .. ':result', base .. ':report')
  redis.call('ZREM', KEYS[1], member)
end
return #gone
""".replace("{STATUSES}", "{" + ", ".join(f"'{status.value}'" for status in JobStatus) + "}")
# Deletes an idempotency key still reserved for ARGV[1] (its job was not accepted).
RELEASE_KEY = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
# Forgets a claim that is still "sending"; KEYS[1] the ledger key.
RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)['state'] == 'sending' then redis.call('DEL', KEYS[1]) end
return 0
"""


def kinds(retention_s: Mapping[str, float]) -> tuple[Kind, ...]:
    def write_job(commands: list[Command], job_id: str, job: JobRecord) -> None:
        base = key("job", job_id)
        ttl = _ttl(job, retention_s)
        expiry = ["EX", num(ttl)] if ttl else []
        commands.append(["SET", base, job.model_dump_json(), *expiry])
        if ttl and job.finished_at is not None:  # finished: its data goes with it
            commands.append(["EXPIRE", base + ":request", num(ttl)])
            commands.append(["EXPIRE", base + ":result", num(ttl)])
            commands.append(["EXPIRE", base + ":report", num(ttl)])
        if job.mode == "async" and job.idempotency_key is not None:
            commands.append(["SET", key("idem", job.idempotency_key), job.job_id, *expiry])
        new = job.mode == "sync" or (job.status is JobStatus.QUEUED and job.attempts == 0)
        index_job(commands, job, retention_s, new=new)

    def write_data(which: str) -> Callable[[list[Command], str, bytes], None]:
        def write(commands: list[Command], job_id: str, data: bytes) -> None:
            commands.append(["SET", key("job", job_id, which), data])

        return write

    def write_settled(commands: list[Command], ledger_key: str, result: dict[str, Any]) -> None:
        entry = orjson.dumps({"state": "sent", "result": result})
        ttl = num(int(max(retention_s.values())))
        commands.append(["SET", key("ledger", ledger_key), entry, "EX", ttl])

    return (
        Kind("job_request", write_data("request")),
        Kind("job_result", write_data("result")),
        Kind("job_report", write_data("report")),
        Kind("jobs", write_job),
        Kind("ledger_settle", write_settled),
    )


def index_job(
    commands: list[Command], job: JobRecord, retention_s: Mapping[str, float], *, new: bool
) -> None:
    """The index entries of `job` in its state: its expiry, its status (taken out of the
    unfinished ones it has left), and when `new` those written once (creation time, type, queue,
    execution, workflow). Also what `redis_backfill` writes for a job stored before them."""
    if job.finished_at is not None:
        expires = job.finished_at + retention_s[job.mode]
        commands.append(["ZADD", key("expiring"), num(expires), _expiring_member(job)])
    elif job.mode == "sync":  # still running: should its instance die, its indexes go with it
        expires = time.time() + UNFINISHED_SYNC_TTL_S
        commands.append(["ZADD", key("expiring"), num(expires), _expiring_member(job)])
    created = num(job.created_at)
    # Finished statuses are terminal: before this one, the job can only have been in an
    # unfinished one (a batch writes only a job's latest state).
    commands.append(["ZADD", key("jobs", "status", job.status.value), created, job.job_id])
    for earlier in UNFINISHED - {job.status}:
        commands.append(["ZREM", key("jobs", "status", earlier.value), job.job_id])
    if not new:
        return
    commands.append(["ZADD", key("jobs", "all"), created, job.job_id])
    commands.append(["ZADD", key("jobs", "type", job.processing_type), created, job.job_id])
    if job.queue is not None:
        commands.append(["ZADD", key("jobs", "queue", job.queue), created, job.job_id])
    if job.execution_id is not None:
        commands.append(["ZADD", key("jobs", "exec", job.execution_id), created, job.job_id])
    if job.workflow_id is not None:
        commands.append(["ZADD", key("wf", job.workflow_id), created, job.job_id])
        if job.execution_id is not None:
            index = key("wfx", job.workflow_id, job.execution_id)
            commands.append(["ZADD", index, created, job.job_id])


def _expiring_member(job: JobRecord) -> bytes:
    """What PURGE needs to find a job in every index; the same bytes for every state of the
    job (its fields here never change), so a new state moves its expiry instead of adding one."""
    return orjson.dumps(
        [job.job_id, job.workflow_id, job.execution_id, job.processing_type, job.queue]
    )


def _ttl(job: JobRecord, retention_s: Mapping[str, float]) -> int | None:
    if job.finished_at is not None:
        return max(1, int(job.finished_at + retention_s[job.mode] - time.time()))
    return UNFINISHED_SYNC_TTL_S if job.mode == "sync" else None


class RedisJobStore:
    def __init__(self, db: RedisDb, retention_s: Mapping[str, float]) -> None:
        self.db = db
        self.retention_s = retention_s
        self._purge = db.redis.register_script(PURGE)
        self._release = db.redis.register_script(RELEASE)
        self._release_key = db.redis.register_script(RELEASE_KEY)

    async def save(
        self,
        job: JobRecord,
        *,
        durable: bool = False,
        request: bytes | None = None,
        result: bytes | None = None,
    ) -> None:
        if request is not None:
            self.db.put("job_request", job.job_id, request)
        if result is not None:
            self.db.put("job_result", job.job_id, result)
        self.db.put("jobs", job.job_id, job)
        if durable:
            await self.db.flush()

    def withdraw(self, job: JobRecord) -> None:
        """Take back a new job's writes that have not gone out (its caller was told 503),
        its queue entry with them."""
        for kind in ("job_request", "jobs", "enqueue"):
            self.db.withdraw(kind, job.job_id)

    async def flush(self) -> None:
        await self.db.flush()

    async def save_report(self, job_id: str, report: bytes) -> None:
        """Kept until the job's retention ends (a job still running sets its expiry when it
        ends; one reported after its end has its key unlinked with the job's)."""
        self.db.put("job_report", job_id, report)
        await self.db.flush()

    async def get(self, job_id: str) -> JobRecord | None:
        found, job = self.db.pending("jobs", job_id)
        if found:
            return with_report(job, await self.get_data(job_id, "report")) if job else None
        # One round trip: a report is written before save_report returns.
        raw, report = await self.db.redis.mget([key("job", job_id), key("job", job_id, "report")])
        return with_report(JobRecord.model_validate_json(raw), report) if raw else None

    async def get_data(self, job_id: str, which: Data) -> bytes | None:
        found, data = self.db.pending(f"job_{which}", job_id)
        if found:
            return data  # type: ignore[no-any-return]
        return await self.db.redis.get(key("job", job_id, which))  # type: ignore[no-any-return]

    async def claim_idempotency_key(self, idempotency_key: str, job_id: str) -> JobRecord | None:
        """Reserve the key for `job_id` (for RESERVE_MS, until the job is saved); the job that
        already holds it, if any — across every instance sharing this Redis."""
        name = key("idem", idempotency_key)
        for _ in range(50):
            if await self.db.redis.set(name, job_id, nx=True, px=RESERVE_MS):
                return None
            holder = await self.db.redis.get(name)
            if holder is None:
                continue  # expired in between: try again
            job = await self.get(holder.decode())
            if job is not None:
                return job
            await asyncio.sleep(0.1)  # being accepted by another request right now
        raise Conflict(
            f"a job with idempotency key {idempotency_key!r} is being accepted by another "
            "request; try again in a moment"
        )

    async def release_idempotency_key(self, idempotency_key: str, job_id: str) -> None:
        await self._release_key(keys=[key("idem", idempotency_key)], args=[job_id])

    async def list_for_workflow(
        self,
        workflow_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        execution_id: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        await self.db.flush()
        index = (
            key("wfx", workflow_id, execution_id)
            if execution_id is not None
            else key("wf", workflow_id)
        )
        after = decode_cursor(cursor) if cursor is not None else None
        top: float | str = after[0] if after else "+inf"
        jobs: list[JobRecord] = []
        offset = 0
        while len(jobs) <= limit:
            chunk = limit + 1 - len(jobs) + LIST_SCAN
            found: list[tuple[bytes, float]] = await self.db.redis.zrevrangebyscore(
                index, top, "-inf", start=offset, num=chunk, withscores=True
            )
            offset += len(found)
            ids = [
                member.decode()
                for member, score in found
                if after is None or (score, member.decode()) < after
            ]
            names = [key("job", job_id, *part) for job_id in ids for part in ((), ("report",))]
            values = await self.db.redis.mget(names) if ids else []
            jobs += [
                with_report(JobRecord.model_validate_json(raw), report)
                for raw, report in zip(values[::2], values[1::2], strict=True)
                if raw
            ]
            if len(found) < chunk:
                break
        more = len(jobs) > limit
        jobs = jobs[:limit]
        last = jobs[-1] if jobs else None
        return jobs, encode_cursor(last.created_at, last.job_id) if more and last else None

    async def list_jobs(
        self, filters: JobFilter, *, limit: int, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        await self.db.flush()
        return await redis_listing.list_jobs(self.db, filters, limit, cursor)

    async def purge_expired(self, now: float) -> int:
        """Index entries of jobs past their retention (their keys expire by themselves)."""
        total = 0
        while True:
            removed = int(await self._purge(keys=[key("expiring")], args=[now, PURGE_CHUNK, key()]))
            total += removed
            if removed < PURGE_CHUNK:
                return total

    # ---- the ledger ----------------------------------------------------------------------

    async def lookup(self, keys: Sequence[str]) -> dict[str, LedgerEntry]:
        found: dict[str, LedgerEntry] = {}
        rest = []
        for ledger_key in keys:
            pending, settled = self.db.pending("ledger_settle", ledger_key)
            if pending and settled is not None:
                found[ledger_key] = LedgerEntry("sent", settled)
            else:
                rest.append(ledger_key)
        for start in range(0, len(rest), LOOKUP_CHUNK):
            chunk = rest[start : start + LOOKUP_CHUNK]
            values = await self.db.redis.mget([key("ledger", k) for k in chunk])
            for ledger_key, raw in zip(chunk, values, strict=True):
                if raw:
                    entry = orjson.loads(raw)
                    found[ledger_key] = LedgerEntry(entry["state"], entry.get("result"))
        return found

    async def claim(self, ledger_key: str) -> LedgerEntry | None:
        for _ in range(3):
            claimed = await self.db.redis.set(
                key("ledger", ledger_key),
                b'{"state":"sending"}',
                nx=True,
                ex=int(max(self.retention_s.values())),
            )
            if claimed:
                return None
            entry = (await self.lookup([ledger_key])).get(ledger_key)
            if entry is not None:
                return entry
        raise Conflict(f"idempotency key {ledger_key!r} keeps changing hands; try again")

    async def settle(self, ledger_key: str, result: dict[str, Any]) -> None:
        self.db.put("ledger_settle", ledger_key, result)

    async def release(self, ledger_key: str) -> None:
        await self._release(keys=[key("ledger", ledger_key)])

    async def ping(self) -> None:
        await self.db.ping()

    def unavailable(self) -> str | None:
        if not self.db.up:
            return f"Redis is unreachable ({self.db.down_reason})"
        return f"Redis refuses writes: {self.db.failing}" if self.db.failing else None
