"""`list_jobs` on the Redis backend: every job across workflows, newest first, by the sorted-set
indexes `redis` keeps (job ids scored by creation time).

Each filter names a group of index keys whose union holds the jobs it keeps: a status (one key
per status asked for), a processing type, a queue, a workflow (and execution), an execution, a
credential's workflows (one key per workflow it names, when it names no prefix). The group with
the fewest entries in the time range (ZCOUNT, one round trip) is read, newest first, in batches
(ZREVRANGEBYSCORE; a group of several keys is merged); each batch is checked against the other
groups (ZMSCORE), the jobs left are read (MGET) and checked once more on the record itself, and
the reports of those kept are read (MGET).

The work of one request is bounded: after SCAN_BUDGET index entries the page ends with what was
found and a cursor to go on from there, so that no filter makes a request read 100,000 records.
A short page with a next cursor is therefore not the end: the end is a null cursor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import orjson

from bridge.jobs import JobRecord
from bridge.stores.base import JobFilter, decode_cursor, encode_cursor, with_report
from bridge.stores.redis_db import RedisDb, key, num

SCAN_BUDGET = 2_000  # index entries one request may read
BATCH = 200  # index entries per round when other filters may leave some out
MAX_LIMIT_KEYS = 16  # a credential naming more workflows is checked on the records instead

Entry = tuple[float, str]  # (created_at, job_id): the order is by both, descending


@dataclass(slots=True)
class _Index:
    """One sorted set, read newest first from a position; `top` the highest score left to
    read (`open_top`: that score itself is not), `skip` how many entries at `top` were read."""

    key: str
    top: float
    bottom: float
    open_top: bool = False
    skip: int = 0
    buffer: list[Entry] = field(default_factory=list)
    exhausted: bool = False

    def bounds(self) -> tuple[str, str]:
        """ZREVRANGEBYSCORE's max and min: what is left to read."""
        top = "+inf" if self.top == math.inf else ("(" if self.open_top else "") + num(self.top)
        return top, "-inf" if self.bottom == -math.inf else num(self.bottom)

    def took(self, found: list[tuple[bytes, float]], count: int) -> None:
        """Keep what a read of `count` entries found, and move the position past it (entries
        that share a score are told apart by `skip`: ZREVRANGEBYSCORE's LIMIT offset)."""
        self.buffer += [(score, member.decode()) for member, score in found]
        self.exhausted = len(found) < count
        if not found:
            return
        last = found[-1][1]
        ties = sum(1 for _, score in found if score == last)
        if last == self.top and not self.open_top:
            self.skip += ties
        else:
            self.top, self.open_top, self.skip = last, False, ties


class _Merged:
    """The union of a group's indexes, newest first."""

    def __init__(self, indexes: list[_Index]) -> None:
        self.indexes = indexes

    @property
    def exhausted(self) -> bool:
        return all(index.exhausted and not index.buffer for index in self.indexes)

    async def next(self, db: RedisDb, count: int) -> list[Entry]:
        """The next entries in order, at most about `count` read from Redis."""
        empty = [index for index in self.indexes if not index.buffer and not index.exhausted]
        if empty:
            each = max(10, count // len(empty))
            async with db.redis.pipeline(transaction=False) as pipe:
                for index in empty:
                    top, bottom = index.bounds()
                    pipe.zrevrangebyscore(
                        index.key, top, bottom, start=index.skip, num=each, withscores=True
                    )
                answers = await pipe.execute()
            for index, found in zip(empty, answers, strict=True):
                index.took(found, each)
        # Safe to hand out: what is at or above the lowest entry read of every index that may
        # hold more below it.
        frontier = max(
            (index.buffer[-1] for index in self.indexes if not index.exhausted and index.buffer),
            default=None,
        )
        out: list[Entry] = []
        for index in self.indexes:
            cut = len(index.buffer)
            if frontier is not None:
                cut = sum(1 for entry in index.buffer if entry >= frontier)
            out += index.buffer[:cut]
            del index.buffer[:cut]
        out.sort(reverse=True)
        return out


def _groups(filters: JobFilter) -> tuple[list[list[str]], bool] | None:
    """The filters as groups of index keys (a job passes a group in any of its keys), and
    whether they say all the filters do (else some are checked on the records only); None
    when the credential reaches no workflow."""
    groups: list[list[str]] = []
    statuses = filters.wanted_statuses()
    if statuses:
        groups.append([key("jobs", "status", status.value) for status in sorted(statuses)])
    if filters.processing_type is not None:
        groups.append([key("jobs", "type", filters.processing_type)])
    if filters.queue is not None:
        groups.append([key("jobs", "queue", filters.queue)])
    if filters.workflow_id is not None:
        if filters.execution_id is not None:
            groups.append([key("wfx", filters.workflow_id, filters.execution_id)])
        else:
            groups.append([key("wf", filters.workflow_id)])
    elif filters.execution_id is not None:
        groups.append([key("jobs", "exec", filters.execution_id)])
    limit = filters.workflows
    if limit is None:
        return groups, True
    if not limit.exact and not limit.prefixes:
        return None
    if limit.prefixes or len(limit.exact) > MAX_LIMIT_KEYS:
        return groups, False
    groups.append([key("wf", workflow) for workflow in sorted(limit.exact)])
    return groups, True


async def _most_selective(
    db: RedisDb, groups: list[list[str]], low: float, high: float
) -> list[str]:
    """The group with the fewest entries between `low` and `high` (each a ZCOUNT)."""
    if len(groups) == 1:
        return groups[0]
    bottom = "-inf" if low == -math.inf else num(low)
    top = "+inf" if high == math.inf else num(high)
    async with db.redis.pipeline(transaction=False) as pipe:
        for group in groups:
            for name in group:
                pipe.zcount(name, bottom, top)
        counts = iter(await pipe.execute())
    sizes = [sum(next(counts) for _ in group) for group in groups]
    return groups[sizes.index(min(sizes))]


async def _in_every_group(db: RedisDb, groups: list[list[str]], ids: list[str]) -> list[str]:
    """The ids found in at least one key of every group (ZMSCORE: one round trip)."""
    if not groups or not ids:
        return ids
    names = [name for group in groups for name in group]
    async with db.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.execute_command("ZMSCORE", name, *ids)
        answers = dict(zip(names, await pipe.execute(), strict=True))
    return [
        job_id
        for n, job_id in enumerate(ids)
        if all(any(answers[name][n] is not None for name in group) for group in groups)
    ]


async def _read(db: RedisDb, ids: list[str], filters: JobFilter) -> list[JobRecord]:
    """The jobs of `ids` that `filters` keep, with their reports: the records first (a
    credential's prefixes are checked on their JSON, cheaper than the model), then the reports
    of those kept."""
    if not ids:
        return []
    reach = filters.workflows
    kept = []
    for raw in await db.redis.mget([key("job", job_id) for job_id in ids]):
        if raw is None:
            continue  # expired; its index entries go with the next purge
        if reach is not None and not reach.allows(orjson.loads(raw).get("workflow_id")):
            continue
        job = JobRecord.model_validate_json(raw)
        if filters.keeps(job):
            kept.append(job)
    if not kept:
        return []
    reports = await db.redis.mget([key("job", job.job_id, "report") for job in kept])
    return [with_report(job, report) for job, report in zip(kept, reports, strict=True)]


async def list_jobs(
    db: RedisDb, filters: JobFilter, limit: int, cursor: str | None
) -> tuple[list[JobRecord], str | None]:
    after = decode_cursor(cursor) if cursor is not None else None
    grouped = _groups(filters)
    if grouped is None:
        return [], None
    groups, complete = grouped
    low = filters.since if filters.since is not None else -math.inf
    high, open_top = math.inf, False
    if filters.until is not None:
        high, open_top = filters.until, True
    if after is not None and after[0] <= high:
        high, open_top = after[0], False
    source = await _most_selective(db, groups or [[key("jobs", "all")]], low, high)
    others = [group for group in groups if group is not source]
    merged = _Merged([_Index(name, high, low, open_top) for name in source])
    # When the source alone says every filter, each entry read is a job of the page (but for
    # expired ones): read no more than a page.
    batch = limit + 1 if complete and not others else BATCH
    jobs: list[JobRecord] = []
    scanned = 0
    last: Entry | None = after
    while len(jobs) <= limit and scanned < SCAN_BUDGET and not merged.exhausted:
        entries = await merged.next(db, min(batch, SCAN_BUDGET - scanned))
        scanned += len(entries)
        entries = [entry for entry in entries if after is None or entry < after]
        if not entries:
            continue
        last = entries[-1]
        ids = await _in_every_group(db, others, [job_id for _, job_id in entries])
        jobs += await _read(db, ids, filters)
    if len(jobs) > limit:
        end = jobs[limit - 1]
        return jobs[:limit], encode_cursor(end.created_at, end.job_id)
    if merged.exhausted or last is None:
        return jobs, None
    return jobs, encode_cursor(*last)  # out of budget: on from the last entry read
