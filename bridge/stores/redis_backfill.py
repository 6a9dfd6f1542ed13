"""Once per Redis: the `list_jobs` indexes (`jobs:*`) for the jobs a bridge older than them
stored, so that after an upgrade the job listing shows the jobs already there.

At start-up, in the background (readiness does not wait), unless `jobs-indexed` says the indexes
are complete: SCAN the job records (`job:{id}`, not their `:request`, `:result`, `:report`),
read them CHUNK at a time (MGET) and write each job's index entries as a save of a new job
would (`redis.index_job`: the same members and scores; its expiry in the shape PURGE needs to
take it out of the new indexes). ZADD is idempotent, so a job saved by this version, another
instance backfilling at the same time, or a run cut short and started over next time, all end in
the same indexes. The status index alone can go stale: a job read in one status may have moved
on before its entries are written, so INDEX writes a job's entries only if its record is still
in the status they were made from (the script runs alone in Redis: no save comes in between),
and the jobs that moved are read again. Then the marker is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import msgpack
from pydantic import ValidationError
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from bridge.jobs import JobRecord
from bridge.stores.redis import index_job
from bridge.stores.redis_db import Command, RedisDb, key

log = logging.getLogger(__name__)

MARKER = key("jobs-indexed")  # the version of the indexes every stored job is in
VERSION = b"1"
SCAN_COUNT = 500  # keys per SCAN
CHUNK = 100  # records per MGET and per script call: Redis runs one in some 4 ms
PAUSE_S = 0.002  # between chunks, for Redis's other clients (100,000 jobs: 2 s of pauses)

# Runs each job's index commands if its record is still in the status they were made from;
# KEYS[1] `jobs:all`; ARGV[1] a MessagePack list of {record key, job id, status, commands}.
# Returns how many were not in `jobs:all` before, and the record keys of those whose status
# had changed. A record gone meanwhile (expired, purged) is left out.
INDEX = """
local earlier, moved = 0, {}
for _, job in ipairs(cmsgpack.unpack(ARGV[1])) do
  local raw = redis.call('GET', job[1])
  if raw then
    if cjson.decode(raw)['status'] ~= job[3] then
      moved[#moved + 1] = job[1]
    else
      if not redis.call('ZSCORE', KEYS[1], job[2]) then earlier = earlier + 1 end
      for _, c in ipairs(job[4]) do redis.call(unpack(c)) end
    end
  end
end
return {earlier, moved}
"""


async def backfill(db: RedisDb, retention_s: Mapping[str, float]) -> None:
    """Index the jobs stored before the indexes, unless the marker says it is done; a Redis
    failure leaves it for the next start (which starts over)."""
    try:
        if await db.redis.get(MARKER) == VERSION:
            return
        log.info("Indexing the jobs stored by an earlier version, for the job listing")
        started = time.monotonic()
        earlier, unreadable = await _walk(db, retention_s)
        await db.redis.set(MARKER, VERSION)
    except (RedisError, OSError) as exc:
        log.warning("Indexing the jobs stored by an earlier version stopped (%s): the next "
                    "start starts over", exc)  # fmt: skip
        return
    log.info(
        "Indexed %d jobs stored by an earlier version in %.1f s%s",
        earlier,
        time.monotonic() - started,
        f" ({unreadable} unreadable records left out)" if unreadable else "",
    )


async def _walk(db: RedisDb, retention_s: Mapping[str, float]) -> tuple[int, int]:
    """Every job record, a chunk at a time: how many were indexed for the first time, and how
    many records could not be read as jobs."""
    script = db.redis.register_script(INDEX)
    records = len(key("job", ""))
    earlier = unreadable = 0
    chunk: list[bytes] = []
    async for name in db.redis.scan_iter(match=key("job", "*"), count=SCAN_COUNT):
        if b":" in name[records:]:
            continue  # a job's request, result or report
        chunk.append(name)
        if len(chunk) < CHUNK:
            continue
        counts = await _index(db, script, chunk, retention_s)
        earlier, unreadable = earlier + counts[0], unreadable + counts[1]
        chunk = []
        await asyncio.sleep(PAUSE_S)
    counts = await _index(db, script, chunk, retention_s)
    return earlier + counts[0], unreadable + counts[1]


async def _index(
    db: RedisDb, script: AsyncScript, names: list[bytes], retention_s: Mapping[str, float]
) -> tuple[int, int]:
    """Index the jobs of record keys `names`, reading again those whose status moved meanwhile
    (a job moves a few times in its life: this ends)."""
    earlier = unreadable = 0
    while names:
        jobs: list[list[object]] = []
        for name, raw in zip(names, await db.redis.mget(names), strict=True):
            if raw is None:
                continue  # expired since the SCAN
            try:
                job = JobRecord.model_validate_json(raw)
            except ValidationError:
                unreadable += 1
                continue
            commands: list[Command] = []
            index_job(commands, job, retention_s, new=True)
            jobs.append([name, job.job_id, job.status.value, commands])
        if not jobs:
            break
        packed = msgpack.packb(jobs, use_bin_type=False)  # Redis's cmsgpack: no bin types
        found, names = await script(keys=[key("jobs", "all")], args=[packed])
        earlier += found
    return earlier, unreadable
