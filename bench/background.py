"""Benchmark: background jobs end to end — the bridge (embedded backend) against arq on Redis.

Both run the same job: `echo` of one item, and a POST of the result to a callback sink (a separate
aiohttp process counting arrivals). The client submits `--jobs` jobs, at most `--concurrency`
submissions in flight, and the clock stops when the sink has every callback. Both sides run 32
jobs at once (bridge: BRIDGE_QUEUES concurrency; arq: max_jobs). The bridge also runs the jobs
without callbacks, the clock stopping at the last `workflow.completed` on its SSE stream.
Rounds interleave the systems; the tables show medians.

    bash bench/run.sh background [--jobs 5000] [--concurrency 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ROOT, bridge_env, free_port, start_bridge, token

WORKERS = 32


def job_bridge_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """A bridge for these benchmarks: one queue running WORKERS jobs at once, signed callbacks."""
    return bridge_env(
        data_dir,
        BRIDGE_QUEUES=f'[{{"name": "default", "concurrency": {WORKERS}}}]',
        BRIDGE_CALLBACK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        **settings,
    )


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def count(session: aiohttp.ClientSession, sink: str) -> int:
    async with session.get(f"{sink}/count") as response:
        return int(await response.text())


async def until(session: aiohttp.ClientSession, sink: str, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await count(session, sink) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {await count(session, sink)} of {target} callbacks arrived")
        await asyncio.sleep(0.01)


async def flood(jobs: int, concurrency: int, submit: Callable[[int], Awaitable[None]]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await submit(n)

    await asyncio.gather(*(one(n) for n in range(jobs)))


async def bridge_round(url: str, sink: str | None, jobs: int, concurrency: int) -> float:
    """Seconds from the first submission to the last callback (or completion, without a sink)."""
    headers = {"Authorization": f"Bearer {token('execute status')}"}
    async with aiohttp.ClientSession() as session:
        base = await count(session, sink) if sink else 0
        completed = asyncio.Event()
        seen = 0

        async def watch(response: aiohttp.ClientResponse) -> None:
            nonlocal seen
            async for line in response.content:
                if line.startswith(b"event: workflow.completed"):
                    seen += 1
                    if seen >= jobs:
                        completed.set()
                        return

        stream = None
        if sink is None:
            stream = await session.get(
                f"{url}/api/v1/events?type=workflow.completed", headers=headers
            )
            watcher = asyncio.create_task(watch(stream))

        async def submit(n: int) -> None:
            body: dict[str, Any] = {
                "processing_type": "echo",
                "mode": "async",
                "items": [{"json": {"n": n}}],
                "workflow_id": "bench",
            }
            if sink:
                body["callback_url"] = f"{sink}/hook"
            async with session.post(
                f"{url}/api/v1/workflow/execute", json=body, headers=headers
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"submit: {response.status} {await response.text()}")

        started = time.perf_counter()
        await flood(jobs, concurrency, submit)
        if sink:
            await until(session, sink, base + jobs, 300)
        else:
            await asyncio.wait_for(completed.wait(), 300)
            watcher.cancel()
            assert stream is not None
            stream.close()
        return time.perf_counter() - started


async def arq_round(redis_url: str, sink: str, jobs: int, concurrency: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    async with aiohttp.ClientSession() as session:
        base = await count(session, sink)

        async def submit(n: int) -> None:
            await pool.enqueue_job("echo", [{"json": {"n": n}}], f"{sink}/hook")

        started = time.perf_counter()
        await flood(jobs, concurrency, submit)
        await until(session, sink, base + jobs, 300)
        elapsed = time.perf_counter() - started
    await pool.aclose()
    return elapsed


@dataclass(frozen=True)
class Setting:
    """What a background benchmark runs in: a temporary folder, the callback sink, a redis-server,
    and the processes to stop at the end (the benchmark adds its bridges and workers)."""

    tmp: Path
    sink: str
    redis_url: str
    processes: list[subprocess.Popen[bytes]]


@contextlib.asynccontextmanager
async def setting(*, appendonly: bool) -> AsyncIterator[Setting]:
    """The sink and a redis-server on free ports, once the sink answers; all stopped after."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("redis-server is missing: bash bench/run.sh installs it")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        sink_port, redis_port = free_port(), free_port()
        arguments = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
        arguments += ["--dir", str(tmp)]
        arguments += ["--appendonly", "yes", "--appendfsync", "everysec"] if appendonly else []
        processes = [
            start([sys.executable, "-m", "bench.callback_sink", str(sink_port)]),
            start([redis_server, *arguments]),
        ]
        try:
            sink = f"http://127.0.0.1:{sink_port}"
            await wait_http(f"{sink}/count")
            yield Setting(tmp, sink, f"redis://127.0.0.1:{redis_port}", processes)
        finally:
            for process in reversed(processes):  # bridges and workers before Redis and the sink
                stop(process)


async def start_arq_worker(redis_url: str) -> subprocess.Popen[bytes]:
    """An arq worker process running WORKERS jobs at once, once it has had time to connect."""
    env = {
        **os.environ,
        "ARQ_REDIS": redis_url,
        "ARQ_MAX_JOBS": str(WORKERS),
        "PYTHONPATH": str(ROOT),
    }
    worker = start([sys.executable, "-m", "arq", "bench.arq_worker.WorkerSettings"], env)
    await asyncio.sleep(1.0)
    return worker


def rate_table(
    columns: tuple[str, ...],
    rows: list[tuple[tuple[str, ...], str]],
    results: dict[str, list[float]],
    jobs: int,
) -> dict[str, float]:
    """Print a markdown table: the row's cells, jobs/s (median round) and each round's
    seconds; return the jobs/s by key."""
    rate = {name: jobs / statistics.median(times) for name, times in results.items()}
    print("| " + " | ".join(columns) + " | jobs/s | seconds per round |")
    print("|" + "---|" * (len(columns) + 2))
    for cells, key in rows:
        times = ", ".join(f"{t:.2f}" for t in results[key])
        print("| " + " | ".join(cells) + f" | {rate[key]:,.0f} | {times} |")
    return rate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


async def main_async(args: argparse.Namespace) -> None:
    async with setting(appendonly=False) as bench:
        bridge, url = start_bridge(job_bridge_env(bench.tmp / "bridge"), bench.tmp / "bridge.log")
        bench.processes.append(bridge)
        bench.processes.append(await start_arq_worker(bench.redis_url))
        sink, redis_url = bench.sink, bench.redis_url
        warm = max(200, args.jobs // 10)
        await bridge_round(url, sink, warm, args.concurrency)
        await arq_round(redis_url, sink, warm, args.concurrency)
        results: dict[str, list[float]] = {"bridge": [], "bridge_no_cb": [], "arq": []}
        for _ in range(args.rounds):
            results["bridge"].append(await bridge_round(url, sink, args.jobs, args.concurrency))
            results["arq"].append(await arq_round(redis_url, sink, args.jobs, args.concurrency))
            results["bridge_no_cb"].append(
                await bridge_round(url, None, args.jobs, args.concurrency)
            )
    print(
        f"\n{args.jobs:,} jobs, {args.concurrency} submissions in flight, {WORKERS} jobs at "
        f"once, median of {args.rounds} rounds\n"
    )
    rate = rate_table(
        ("system", "what is timed"),
        [
            (("n8n-bridge (embedded)", "submit → callback received"), "bridge"),
            (("arq 0.28 + Redis", "enqueue → callback received"), "arq"),
            (("n8n-bridge (embedded)", "submit → completed (SSE), no callback"), "bridge_no_cb"),
        ],
        results,
        args.jobs,
    )
    print(f"\nbridge / arq, end to end with callbacks: {rate['bridge'] / rate['arq']:.2f} times")


def main() -> None:
    asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    main()
