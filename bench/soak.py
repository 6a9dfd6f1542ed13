"""Load and soak: many concurrent clients mixing sync and background calls against one bridge
(embedded backend) for a bounded time. Counts errors (any non-2xx answer or connection error,
and any background job not completed at the end), reports latency percentiles by kind, and
samples the daemon's RSS once a second: after the warm-up (the first fifth of the run) it must
not grow by more than 5 %. Exits 1 when there was an error or the memory grew.

Mix per client, in turn: sync `echo` of 5 items; sync `template_render` of 20 items; a
background `echo` job (with an idempotency key), whose end the client waits for (polling its
status) before it sends its next one. Every job is checked at the end.

    bash bench/run.sh soak [--clients 100] [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import bridge_env, rss_mb, start_bridge, token

EXECUTE = "/api/v1/workflow/execute"
TEMPLATE = "Dear {{ name }}, your order {{ order }} of {{ '%.2f' % total }} EUR has shipped."


def requests_of(client: int) -> itertools.cycle[tuple[str, dict[str, Any]]]:
    people = [
        {"name": f"Person {n}", "order": f"A-{client}-{n}", "total": n * 1.5} for n in range(20)
    ]
    return itertools.cycle(
        [
            ("sync echo", {"processing_type": "echo", "items": [{"json": p} for p in people[:5]]}),
            (
                "sync template_render",
                {
                    "processing_type": "template_render",
                    "parameters": {"template": TEMPLATE},
                    "items": [{"json": p} for p in people],
                },
            ),
            ("async echo", {"processing_type": "echo", "mode": "async", "items": [{"json": {}}]}),
        ]
    )


class Soak:
    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.until = time.monotonic() + seconds
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.jobs: list[str] = []
        self.jobs_of: dict[int, list[str]] = defaultdict(list)

    async def wait_for(self, session: aiohttp.ClientSession, job_id: str) -> None:
        """Poll the job's status (each poll a "status" request) until it has ended."""
        while time.monotonic() < self.until:
            started = time.perf_counter()
            try:
                async with session.get(f"{self.url}/api/v1/workflow/status/{job_id}") as answer:
                    if answer.status != 200:
                        self.errors.append(f"status: HTTP {answer.status}")
                        return
                    status = (await answer.json())["status"]
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"status: {type(exc).__name__}: {exc}")
                return
            self.latencies["status"].append(time.perf_counter() - started)
            if status in ("completed", "failed", "cancelled"):
                return
            await asyncio.sleep(0.05)

    async def client(self, session: aiohttp.ClientSession, n: int) -> None:
        """One n8n execution after another: a client waits for its background job before it
        sends the next (as the node's "wait" does), so the load is steady, not a backlog."""
        for i, (kind, body) in enumerate(requests_of(n)):
            if time.monotonic() >= self.until:
                return
            if kind.startswith("async"):
                if self.jobs_of[n]:
                    await self.wait_for(session, self.jobs_of[n][-1])
                body = {**body, "idempotency_key": f"soak-{n}-{i}"}
            started = time.perf_counter()
            try:
                async with session.post(self.url + EXECUTE, json=body) as answer:
                    payload = await answer.read()
                    if not 200 <= answer.status < 300:
                        self.errors.append(f"{kind}: HTTP {answer.status} {payload[:200]!r}")
                        continue
                    if kind.startswith("async"):
                        job_id = (await answer.json())["job_id"]
                        self.jobs.append(job_id)
                        self.jobs_of[n].append(job_id)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            self.latencies[kind].append(time.perf_counter() - started)

    async def unfinished_jobs(self, session: aiohttp.ClientSession) -> list[str]:
        """Background jobs not completed once the queue is empty (they must all be)."""
        deadline = time.monotonic() + 120
        gate = asyncio.Semaphore(20)

        async def status(job_id: str) -> str:
            async with gate, session.get(f"{self.url}/api/v1/workflow/status/{job_id}") as a:
                return str((await a.json())["status"])

        pending = list(self.jobs)
        while pending and time.monotonic() < deadline:
            found = await asyncio.gather(*(status(job_id) for job_id in pending))
            pending = [j for j, s in zip(pending, found, strict=True) if s != "completed"]
            if pending:
                await asyncio.sleep(1)
        return pending


async def sample_rss(pid: int, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, rss_mb(pid)))
        await asyncio.sleep(1)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else 0.0


async def main_async(args: argparse.Namespace) -> int:
    data = Path(tempfile.mkdtemp(prefix="bridge-soak-"))
    env = bridge_env(
        data / "data",
        BRIDGE_ACCESS_LOG="false",
        BRIDGE_QUEUES='[{"name": "default", "concurrency": 32, "max_depth": 100000}]',
    )
    process, url = start_bridge(env, data / "bridge.log")
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    soak = Soak(url, args.seconds)
    headers = {"Authorization": f"Bearer {token('execute status')}"}
    connector = aiohttp.TCPConnector(limit=args.clients)
    try:
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            sampler = asyncio.create_task(sample_rss(process.pid, samples, stop))
            started = time.monotonic()
            await asyncio.gather(*(soak.client(session, n) for n in range(args.clients)))
            elapsed = time.monotonic() - started
            unfinished = await soak.unfinished_jobs(session)
            stop.set()
            await sampler
    finally:
        process.terminate()
        process.wait(30)

    warm = [rss for t, rss in samples if args.seconds * 0.2 <= t < args.seconds * 0.3]
    last = [rss for t, rss in samples if t >= args.seconds * 0.9]
    baseline, final = statistics.median(warm), statistics.median(last)
    growth = final / baseline - 1
    total = sum(len(v) for v in soak.latencies.values())
    print(f"\n{args.clients} clients, {elapsed:.0f} s: {total} requests ({total / elapsed:.0f}/s)")
    print("\n| kind | requests | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|")
    for kind, values in sorted(soak.latencies.items()):
        p50, p95, p99 = (percentile(values, q) * 1000 for q in (0.5, 0.95, 0.99))
        print(f"| {kind} | {len(values)} | {p50:.1f} | {p95:.1f} | {p99:.1f} |")
    print(
        f"\nerrors: {len(soak.errors)}; background jobs {len(soak.jobs)}, not completed: "
        f"{len(unfinished)}\nRSS: {samples[0][1]:.0f} MB at start, {baseline:.0f} MB after the "
        f"warm-up, {final:.0f} MB at the end ({growth:+.1%}; limit +5 %)"
    )
    for error in soak.errors[:5]:
        print("  ", error)
    return 0 if not soak.errors and not unfinished and growth <= 0.05 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=120)
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
