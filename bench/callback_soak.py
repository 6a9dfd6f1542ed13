"""Soak: background jobs whose callbacks resume n8n executions, into a receiver with n8n's resume
semantics (`bench/resume_receiver.py`): 409 "is running already" on the first call of each
callback, 503 on every tenth call, and down (connection refused) for a while once half of the
callbacks are in. Jobs arrive at a steady rate, as executions reach their Wait node, so callbacks
are in back-off while others to the same host succeed. One real bridge process (embedded backend,
or Redis with `--redis`), with the settings `Plan.settings` lists — what a user sets.

Checks, each a failure when it does not hold (exit status 1):
- every callback taken exactly once: one 2xx per `webhook-id` (`cb_<job_id>`), no call after it;
- no dead letters (`GET /admin/dead-letters`), every job's `callback.state` "delivered";
- the receiver went down and came back;
- no two attempts of one callback closer than `--min-gap-s`;
- the waits follow the schedule. Each wait between two attempts that reached the receiver, both
  before or both after the outage, is set against its ceiling min(base * 2^(k-1), cap) after
  attempt k. Full jitter draws the wait evenly from [0, ceiling] (the breaker may only make it
  longer), so a wait falls in the lowest 5 % of its range with a chance of 5 %: the count there is
  at most Binomial(n, 0.05). More than its mean plus five standard deviations (a false alarm about
  once in three million runs) means waits were cut short.
Printed: attempts per callback, the receiver's answers, the waits between attempts, the time from
submission to delivery.

    bash bench/run.sh callback_soak [--jobs 2000] [--rate 50] [--down-s 20] [--redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.background import job_bridge_env, stop
from bench.common import free_port, start_bridge, token
from bench.resume_receiver import Call, ResumeReceiver

SHORT = 0.05  # a wait in the lowest 5 % of its range


@dataclass(frozen=True)
class Plan:
    jobs: int = 2000
    rate: float = 50.0  # jobs submitted per second
    down_s: float = 20.0
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    breaker_failures: int = 5  # the bridge's defaults
    breaker_reset_s: float = 30.0
    min_gap_s: float = 0.0  # the schedule's shortest wait between two attempts
    concurrency: int = 64
    timeout_s: float = 600.0

    def settings(self) -> dict[str, str]:
        """The bridge's settings for the soak: what a user running n8n on the same host sets."""
        return {
            "BRIDGE_ACCESS_LOG": "false",
            # n8n is on loopback: allowed by name, everything else private stays refused.
            "BRIDGE_OUTBOUND_POLICY": "private-denied",
            "BRIDGE_OUTBOUND_ALLOW": "127.0.0.1",
            "BRIDGE_RETRY_BASE_S": str(self.retry_base_s),
            "BRIDGE_CALLBACK_RETRY_MAX_S": str(self.retry_max_s),
            "BRIDGE_BREAKER_FAILURES": str(self.breaker_failures),
            "BRIDGE_BREAKER_RESET_S": str(self.breaker_reset_s),
        }


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def show(self, line: str = "") -> None:
        self.lines.append(line)

    def text(self) -> str:
        verdict = ["", "PASSED" if not self.failures else "FAILED:"]
        return "\n".join(self.lines + verdict + [f"  - {f}" for f in self.failures])


@dataclass
class Job:
    submitted: float  # time.monotonic()
    record: dict[str, Any] = field(default_factory=dict)  # its status, once all callbacks ended


def spread(values: list[float]) -> str:
    """min / median / p95 / max."""
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(int(len(ordered) * 0.95), len(ordered) - 1)]
    figures = (ordered[0], statistics.median(ordered), p95, ordered[-1])
    return " / ".join(f"{v:.3f}" for v in figures) + " s (min / median / p95 / max)"


async def callbacks_ended(session: aiohttp.ClientSession, url: str) -> int:
    """Callbacks delivered or dead so far, from the bridge's /metrics."""
    async with session.get(f"{url}/metrics") as answer:
        text = await answer.text()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "bridge_webhooks"
            for sample in family.samples
            if sample.name == "bridge_webhooks_total" and sample.labels.get("kind") == "callback"
        )
    )


class Soak:
    def __init__(self, plan: Plan, url: str, receiver: ResumeReceiver) -> None:
        self.plan = plan
        self.url = url
        self.receiver = receiver
        self.jobs: dict[str, Job] = {}
        self.report = Report()
        self.dead_letters: list[dict[str, Any]] = []

    async def submit(self, session: aiohttp.ClientSession) -> None:
        gate = asyncio.Semaphore(self.plan.concurrency)
        start = time.monotonic()

        async def one(n: int) -> None:
            execution = str(n)
            body = {
                "processing_type": "echo",
                "mode": "async",
                "items": [{"json": {"n": n}}],
                "workflow_id": "callback-soak",
                "execution_id": execution,
                "callback_url": self.receiver.url(execution),
            }
            await asyncio.sleep(max(start + n / self.plan.rate - time.monotonic(), 0.0))
            async with gate:
                submitted = time.monotonic()
                async with session.post(f"{self.url}/api/v1/workflow/execute", json=body) as a:
                    if a.status != 202:
                        self.report.fail(f"job {n} not accepted: {a.status} {await a.text()}")
                        return
                    self.jobs[(await a.json())["job_id"]] = Job(submitted)

        await asyncio.gather(*(one(n) for n in range(self.plan.jobs)))

    async def settle(self, session: aiohttp.ClientSession) -> None:
        """Wait until every callback was delivered or became a dead letter (or the time is up),
        then read every job and the dead letters."""
        deadline = time.monotonic() + self.plan.timeout_s
        while (ended := await callbacks_ended(session, self.url)) < len(self.jobs):
            if time.monotonic() > deadline:
                self.report.fail(f"only {ended} of {len(self.jobs)} callbacks ended in time")
                break
            await asyncio.sleep(0.5)
        gate = asyncio.Semaphore(16)

        async def read(job_id: str, job: Job) -> None:
            async with gate, session.get(f"{self.url}/api/v1/workflow/status/{job_id}") as a:
                job.record = await a.json()

        await asyncio.gather(*(read(job_id, job) for job_id, job in self.jobs.items()))
        async with session.get(f"{self.url}/admin/dead-letters") as answer:
            self.dead_letters = (await answer.json())["dead_letters"]

    def check(self, started: float) -> Report:
        report, receiver = self.report, self.receiver
        calls = receiver.calls
        ids = {f"cb_{job_id}" for job_id in self.jobs}
        delivered = Counter(receiver.delivered(webhook_id) for webhook_id in ids)
        if set(delivered) != {1}:
            report.fail(
                "2xx answers per webhook-id (count: callbacks): "
                + ", ".join(f"{n}: {c}" for n, c in sorted(delivered.items()))
            )
        again = sum(bool(after_2xx(calls.get(webhook_id, []))) for webhook_id in ids)
        if again:
            report.fail(f"{again} callbacks sent again after they were taken")
        if stray := set(calls) - ids:
            report.fail(f"{len(stray)} calls with a webhook-id of no job: {sorted(stray)[:3]}")
        if self.dead_letters:
            first = self.dead_letters[0]
            report.fail(
                f"dead letters ({len(self.dead_letters)} on the first page), e.g. {first['id']}: "
                f"{first.get('last_error')} (attempts {first.get('attempts')})"
            )
        states = Counter(job.record.get("callback", {}).get("state") for job in self.jobs.values())
        if set(states) != {"delivered"}:
            report.fail(f"callback states: {dict(states)}")
        if receiver.down_from is None or receiver.down_until is None:
            report.fail("the receiver did not go down and come back")
        attempts = {
            job_id: int(job.record.get("callback", {}).get("attempts", 0))
            for job_id, job in self.jobs.items()
        }
        self.timing(attempts, started)
        return report

    def timing(self, attempts: dict[str, int], started: float) -> None:
        report, receiver, plan = self.report, self.receiver, self.plan
        answers = Counter(c.status for calls in receiver.calls.values() for c in calls)
        reached = sum(answers.values())
        histogram = Counter(attempts.values())
        report.show(
            f"{len(self.jobs):,} jobs, callbacks into {receiver.url('<execution>')}; "
            f"settings: {' '.join(f'{k}={v}' for k, v in plan.settings().items())}"
        )
        if receiver.down_from is not None and receiver.down_until is not None:
            report.show(
                f"receiver down from {receiver.down_from - started:.1f} s to "
                f"{receiver.down_until - started:.1f} s into the run"
            )
        report.show(
            f"attempts reaching the receiver: {reached:,} — answered 200: {answers[200]:,}, "
            f"409: {answers[409]:,}, 503: {answers[503]:,}; refused or lost "
            f"(the bridge's count less these): {sum(attempts.values()) - reached:,}"
        )
        report.show(
            "attempts per callback (the bridge's count: callbacks): "
            + ", ".join(f"{n}: {c:,}" for n, c in sorted(histogram.items()))
        )
        waits: list[float] = []
        scheduled: list[tuple[float, float]] = []  # (wait, its ceiling)
        to_deliver: list[float] = []
        taken_at: list[float] = []
        for job_id, job in self.jobs.items():
            calls = receiver.calls.get(f"cb_{job_id}", [])
            for (k, earlier), later in zip(enumerate(calls, 1), calls[1:], strict=False):
                wait = later.at - earlier.at
                waits.append(wait)
                after = self.attempt_number(k, earlier, later, attempts[job_id] - len(calls))
                if after is not None:
                    ceiling = min(plan.retry_base_s * 2 ** (after - 1), plan.retry_max_s)
                    scheduled.append((wait, ceiling))
            taken = next((c.at for c in calls if 200 <= c.status < 300), None)
            if taken is not None:
                taken_at.append(taken)
                to_deliver.append(taken - job.submitted)
        report.show(f"waits between attempts reaching the receiver: {spread(waits)}")
        if too_close := [wait for wait in waits if wait < plan.min_gap_s]:
            report.fail(
                f"{len(too_close)} waits shorter than {plan.min_gap_s} s, the shortest "
                f"{min(too_close) * 1000:.1f} ms"
            )
        short = sum(wait < SHORT * ceiling for wait, ceiling in scheduled)
        n = len(scheduled)
        limit = n * SHORT + 5 * math.sqrt(n * SHORT * (1 - SHORT))
        report.show(
            f"waits outside the outage in the lowest {SHORT:.0%} of their range: {short:,} of "
            f"{n:,} (full jitter: about {n * SHORT:.0f}; limit {limit:.0f})"
        )
        if short > limit:
            report.fail(f"{short} of {n} waits were cut short (limit {limit:.0f})")
        report.show(f"submission to delivery: {spread(to_deliver)}")
        if taken_at and receiver.down_until is not None:
            report.show(
                f"the last callback taken {max(taken_at) - receiver.down_until:.1f} s after the "
                "receiver was back"
            )

    def attempt_number(self, k: int, earlier: Call, later: Call, missing: int) -> int | None:
        """Which attempt `earlier` (the k-th call to arrive) was, when the wait after it is not
        across the outage: attempts that never arrived were refused during it."""
        down_from, down_until = self.receiver.down_from, self.receiver.down_until
        if down_from is None or down_until is None or later.at < down_from:
            return k
        if earlier.at >= down_until:
            return k + missing
        return None


def after_2xx(calls: list[Call]) -> list[Call]:
    for n, call in enumerate(calls):
        if 200 <= call.status < 300:
            return calls[n + 1 :]
    return []


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port: its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: bash bench/run.sh installs it")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@contextlib.asynccontextmanager
async def bridge(plan: Plan, directory: Path, redis_url: str | None) -> AsyncIterator[str]:
    """A bridge process for the soak: its URL."""
    env = job_bridge_env(directory / "data", **plan.settings())
    if redis_url:
        env["BRIDGE_REDIS_URL"] = redis_url
    process, url = await asyncio.to_thread(start_bridge, env, directory / "bridge.log")
    try:
        yield url
    finally:
        await asyncio.to_thread(stop, process)


async def run(plan: Plan, directory: Path, redis_url: str | None = None) -> Report:
    """The soak, start to end: the receiver, a bridge, the jobs, the checks."""
    receiver = ResumeReceiver(down_after=plan.jobs // 2, down_s=plan.down_s)
    headers = {"Authorization": f"Bearer {token('execute status admin')}"}
    async with (
        receiver,
        bridge(plan, directory, redis_url) as url,
        aiohttp.ClientSession(headers=headers) as session,
    ):
        soak = Soak(plan, url, receiver)
        started = time.monotonic()
        await soak.submit(session)
        await soak.settle(session)
        report = soak.check(started)
        report.show(f"run: {time.monotonic() - started:.1f} s")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=Plan.jobs)
    parser.add_argument("--rate", type=float, default=Plan.rate, help="jobs per second")
    parser.add_argument("--down-s", type=float, default=Plan.down_s)
    parser.add_argument("--retry-base-s", type=float, default=Plan.retry_base_s)
    parser.add_argument("--retry-max-s", type=float, default=Plan.retry_max_s)
    parser.add_argument("--breaker-failures", type=int, default=Plan.breaker_failures)
    parser.add_argument("--breaker-reset-s", type=float, default=Plan.breaker_reset_s)
    parser.add_argument("--min-gap-s", type=float, default=Plan.min_gap_s)
    parser.add_argument("--redis", action="store_true", help="the Redis backend")
    args = parser.parse_args()
    plan = Plan(
        jobs=args.jobs,
        rate=args.rate,
        down_s=args.down_s,
        retry_base_s=args.retry_base_s,
        retry_max_s=args.retry_max_s,
        breaker_failures=args.breaker_failures,
        breaker_reset_s=args.breaker_reset_s,
        min_gap_s=args.min_gap_s,
    )
    with tempfile.TemporaryDirectory(prefix="callback-soak-") as name, contextlib.ExitStack() as s:
        directory = Path(name)
        redis_url = s.enter_context(redis_server(directory)) if args.redis else None
        report = asyncio.run(run(plan, directory, redis_url))
    print(report.text())
    raise SystemExit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
