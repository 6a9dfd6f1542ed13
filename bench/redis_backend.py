"""Benchmark: background jobs on the Redis backend — one and two bridge processes, against arq.

Everything shares one redis-server (append-only file on, `appendfsync everysec`, as
docs/operations.md recommends). Each job is `echo` of one item whose result is POSTed to a
callback sink (a separate process counting arrivals); for arq the job function does the POST.
The client submits `--jobs` jobs with at most `--concurrency` in flight — to both bridge
processes in turn when there are two — and the clock stops when the sink has every callback.
Every system runs 32 jobs at once per process. Phase one interleaves rounds of one bridge process
and arq; then a second bridge process joins, and phase two interleaves two processes and arq.
Each bridge round also records the CPU time every process used (bridges, Redis, the sink, this
client), to show how much of the machine was busy.

    bash bench/run.sh redis_backend [--jobs 5000] [--concurrency 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.background import (
    WORKERS,
    arq_round,
    count,
    flood,
    job_bridge_env,
    parse_args,
    rate_table,
    setting,
    start_arq_worker,
    until,
)
from bench.common import start_bridge, token


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds used by each process over a round."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, list[float]] = {name: [] for name in pids}

    def start(self) -> dict[str, float]:
        return {name: cpu_s(pid) for name, pid in self.pids.items()}

    def stop(self, before: dict[str, float]) -> None:
        for name, pid in self.pids.items():
            self.used[name].append(cpu_s(pid) - before[name])


async def bridge_round(urls: list[str], sink: str, jobs: int, concurrency: int) -> float:
    """Seconds from the first submission to the last callback; submissions take turns."""
    headers = {"Authorization": f"Bearer {token('execute status')}"}
    turns = itertools.cycle(urls)
    async with aiohttp.ClientSession() as session:
        base = await count(session, sink)

        async def submit(n: int) -> None:
            body: dict[str, Any] = {
                "processing_type": "echo",
                "mode": "async",
                "items": [{"json": {"n": n}}],
                "workflow_id": "bench",
                "callback_url": f"{sink}/hook",
            }
            async with session.post(
                f"{next(turns)}/api/v1/workflow/execute", json=body, headers=headers
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"submit: {response.status} {await response.text()}")

        started = time.perf_counter()
        await flood(jobs, concurrency, submit)
        await until(session, sink, base + jobs, 300)
        return time.perf_counter() - started


async def main_async(args: argparse.Namespace) -> None:
    results: dict[str, list[float]] = {"one": [], "arq_1": [], "two": [], "arq_2": []}
    cpu: dict[str, Cpu] = {}
    async with setting(appendonly=True) as bench:
        sink, processes = bench.sink, bench.processes
        arq_redis = f"{bench.redis_url}/2"

        def bridge(name: str) -> tuple[str, int]:
            env = job_bridge_env(bench.tmp / name, BRIDGE_REDIS_URL=f"{bench.redis_url}/1")
            process, url = start_bridge(env, bench.tmp / f"{name}.log")
            processes.append(process)
            return url, process.pid

        first, first_pid = bridge("first")
        processes.append(await start_arq_worker(arq_redis))
        warm = max(200, args.jobs // 10)
        await bridge_round([first], sink, warm, args.concurrency)
        await arq_round(arq_redis, sink, warm, args.concurrency)
        pids = {"client": os.getpid(), "sink": processes[0].pid, "redis": processes[1].pid}
        cpu["one"] = Cpu({**pids, "bridge 1": first_pid})
        for _ in range(args.rounds):
            before = cpu["one"].start()
            results["one"].append(await bridge_round([first], sink, args.jobs, args.concurrency))
            cpu["one"].stop(before)
            results["arq_1"].append(await arq_round(arq_redis, sink, args.jobs, args.concurrency))
        second, second_pid = bridge("second")
        await bridge_round([first, second], sink, warm, args.concurrency)
        cpu["two"] = Cpu({**pids, "bridge 1": first_pid, "bridge 2": second_pid})
        for _ in range(args.rounds):
            before = cpu["two"].start()
            results["two"].append(
                await bridge_round([first, second], sink, args.jobs, args.concurrency)
            )
            cpu["two"].stop(before)
            results["arq_2"].append(await arq_round(arq_redis, sink, args.jobs, args.concurrency))
    print(
        f"\n{args.jobs:,} jobs (submit → callback received), {args.concurrency} submissions in "
        f"flight, {WORKERS} jobs at once per process, median of {args.rounds} rounds, "
        f"{os.cpu_count()} cores\n"
    )
    rate = rate_table(
        ("phase", "system"),
        [
            (("1", "n8n-bridge, Redis backend, 1 process"), "one"),
            (("1", "arq 0.28 (1 worker process)"), "arq_1"),
            (("2", "n8n-bridge, Redis backend, 2 processes"), "two"),
            (("2", "arq 0.28 (1 worker process)"), "arq_2"),
        ],
        results,
        args.jobs,
    )
    print("\nCPU per bridge round (seconds of CPU / seconds of wall time = cores busy):\n")
    print("| bridge processes | " + " | ".join(cpu["two"].pids) + " | all | cores busy |")
    print("|---|" + "---|" * (len(cpu["two"].pids) + 2))
    for key, label in (("one", "1"), ("two", "2")):
        wall = sum(results[key])
        used = {name: sum(cpu[key].used.get(name, [0.0])) for name in cpu["two"].pids}
        cells = " | ".join(
            f"{used[name] / wall:.2f}" if name in cpu[key].pids else "—" for name in used
        )
        print(f"| {label} | {cells} | {sum(used.values()) / wall:.2f} | of {os.cpu_count()} |")
    print(f"\none bridge process / arq: {rate['one'] / rate['arq_1']:.2f} times")
    print(f"two bridge processes / one: {rate['two'] / rate['one']:.2f} times")
    print(f"two bridge processes / arq: {rate['two'] / rate['arq_2']:.2f} times")


def main() -> None:
    asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    main()
