"""Benchmark: CPU instructions one background job costs the bridge, counted by callgrind.

On a shared machine, jobs/s and CPU seconds move by half from one minute to the next; the number
of instructions a process executes for the same work does not (the same figure to 0.2 % run after
run). This is the measure for a change meant to save CPU: run it on both commits.

The bridge runs under `valgrind --tool=callgrind` with instrumentation off while it starts and
warms up (300 jobs), on for the `--jobs` that are counted. The load is the one of
`bench/background.py` and `bench/redis_backend.py`: `echo` of one item with a signed callback to
the sink, 64 submissions in flight, 32 jobs at once. The bridge runs ~50 times slower under
callgrind, so its batches of writes hold more jobs than at full speed: compare counts with each
other, not with CPU seconds.

    bash bench/run.sh instructions [--backend embedded|redis|both] [--jobs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from bench.background import job_bridge_env, setting, wait_http
from bench.common import ROOT, free_port
from bench.redis_backend import bridge_round

WARM_JOBS = 300


def start_under_callgrind(
    env: dict[str, str], out: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """`n8n-bridge serve` under callgrind, counting nothing until told to."""
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    with log_file.open("wb") as log:
        return subprocess.Popen(
            [*command, sys.executable, "-m", "bridge", "serve"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def callgrind_total(out: Path) -> int:
    """Instructions in callgrind's dumps (`summary:` / `totals:` lines)."""
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


async def count(backend: str, jobs: int) -> float:
    """Instructions per job of one bridge on `backend`."""
    async with setting(appendonly=True) as bench:
        env = job_bridge_env(
            bench.tmp / "bridge",
            BRIDGE_PORT=str(free_port()),
            **({"BRIDGE_REDIS_URL": f"{bench.redis_url}/1"} if backend == "redis" else {}),
        )
        out = bench.tmp / "callgrind.out"
        bridge = start_under_callgrind(env, out, bench.tmp / "bridge.log")
        bench.processes.append(bridge)
        url = f"http://127.0.0.1:{env['BRIDGE_PORT']}"
        await asyncio.wait_for(wait_http(f"{url}/health"), 600)
        await bridge_round([url], bench.sink, WARM_JOBS, 64)
        callgrind_control("--instr=on", bridge.pid)
        await bridge_round([url], bench.sink, jobs, 64)
        callgrind_control("--dump", bridge.pid)
        return callgrind_total(out) / jobs


async def main_async(args: argparse.Namespace) -> None:
    backends = ("embedded", "redis") if args.backend == "both" else (args.backend,)
    print(f"\n{args.jobs:,} jobs (echo of one item, signed callback), counted by callgrind\n")
    print("| backend | instructions per job (millions) |\n|---|---|")
    for backend in backends:
        print(f"| {backend} | {await count(backend, args.jobs) / 1e6:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("embedded", "redis", "both"), default="both")
    parser.add_argument("--jobs", type=int, default=1000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
