"""The schedule of webhook deliveries, on a virtual clock (looptime: sleeps take no real time).

A scripted host answers each delivery's attempts as the test says; the attempt times are read on
the loop's clock. What is checked is what docs/background-jobs.md states: after the n-th failed
attempt a delivery waits a uniform draw from [0, min(cap, base·2^(n-1))], or the target's
Retry-After when that is longer (capped too); nothing another delivery does cuts that short; a
host's breaker opens after `breaker_failures` host failures in a row, what comes meanwhile waits
without spending attempts, one probe goes after `breaker_reset_s`, and its success lets those
waiting go at once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.breaker import Breakers
from bridge.callbacks import Deliverer
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.webhook_attempt import GiveUp, Retry
from bridge.webhooks import Delivery
from tests.conftest import SECRET

pytestmark = pytest.mark.looptime

HOST = "http://n8n.test:5678"
BASE, CAP, MAX_ATTEMPTS = 1.0, 300.0, 12  # the defaults, as docs/background-jobs.md states them
DOCS = Path(__file__).resolve().parent.parent / "docs" / "background-jobs.md"

# A scripted answer: None is a 2xx; an exception is raised as the attempt's outcome.
Answer = Exception | None


def unavailable() -> Retry:
    return Retry("503 Service Unavailable", "server_error")


def refused() -> Retry:
    return Retry("connection refused", "connection_error")


def running() -> Retry:
    return Retry("409 Conflict", "not_ready")


def bound(attempt: int, base: float = BASE, cap: float = CAP) -> float:
    """The documented upper end of the wait after the `attempt`-th failed attempt."""
    return min(cap, base * 2 ** (attempt - 1))


class MemoryOutbox:
    def __init__(self) -> None:
        self.kept: dict[str, Delivery] = {}
        self.log: list[tuple[str, str]] = []  # ("put" | "done" | "ended", delivery id)

    def put(self, delivery: Delivery) -> None:
        self.kept[delivery.id] = delivery
        self.log.append(("put", delivery.id))

    def done(self, delivery_id: str) -> None:
        self.kept.pop(delivery_id, None)
        self.log.append(("done", delivery_id))

    async def flush(self) -> None:
        pass

    async def pending(self) -> list[Delivery]:
        return [d for d in self.kept.values() if d.state == "pending"]


@dataclass
class Host:
    """Answers by delivery: each id's script in turn, then 2xx (or `default()` if given)."""

    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    default: Callable[[], Answer] | None = None
    hold_s: float = 0.0  # each attempt takes this long
    attempts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    async def __call__(self, delivery: Delivery) -> None:
        self.attempts[delivery.id].append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.hold_s)
        script = self.scripts.get(delivery.id)
        answer = script.pop(0) if script else (self.default() if self.default else None)
        if answer is not None:
            raise answer


@dataclass
class Bench:
    host: Host
    deliverer: Deliverer
    metrics: Metrics
    outbox: MemoryOutbox
    ended: dict[str, tuple[bool, str | None, float]]
    an_end: asyncio.Event  # set (and cleared again) whenever a delivery ends
    waits: dict[str, list[tuple[float, float, str]]]  # (loop time, seconds, why)
    goes: dict[str, list[float]]  # when a wait was over and the next attempt went

    def send(self, delivery_id: str, url: str = f"{HOST}/webhook-waiting/1") -> None:
        self.deliverer.send(Delivery(id=delivery_id, kind="callback", url=url, job_id=delivery_id))

    async def until_ended(self, *ids: str) -> None:
        for delivery_id in ids:
            while delivery_id not in self.ended:
                await self.an_end.wait()

    def gaps(self, delivery_id: str) -> list[float]:
        times = self.host.attempts[delivery_id]
        return [b - a for a, b in itertools.pairwise(times)]


@pytest.fixture
def bench() -> Iterator[Callable[..., Bench]]:
    random.seed(17)  # the jitter's draws, the same on every run
    made: list[Deliverer] = []

    def make(host: Host | None = None, **overrides: Any) -> Bench:
        settings = Settings.model_validate(
            {
                "jwt_secret": SECRET,  # every other setting at its default
                **overrides,
            }
        )
        host = host or Host()
        loop = asyncio.get_running_loop()
        ended: dict[str, tuple[bool, str | None, float]] = {}
        waits: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        goes: dict[str, list[float]] = defaultdict(list)

        an_end = asyncio.Event()

        async def on_end(delivery: Delivery, delivered: bool, reason: str | None) -> None:
            ended[delivery.id] = (delivered, reason, loop.time())
            outbox.log.append(("ended", delivery.id))
            an_end.set()
            an_end.clear()

        async def on_progress(delivery: Delivery) -> None:
            if delivery.waiting_for is None:  # the wait is over: the attempt goes now
                assert delivery.next_attempt_at is None
                goes[delivery.id].append(loop.time())
                return
            assert delivery.next_attempt_at is not None
            seconds = delivery.next_attempt_at - time.time()  # real time barely moves here
            waits[delivery.id].append((loop.time(), seconds, delivery.waiting_for))

        outbox = MemoryOutbox()
        breakers = Breakers(settings.breaker_failures, settings.breaker_reset_s, loop.time)
        metrics = Metrics(None)
        deliverer = Deliverer(settings, outbox, host, breakers, metrics, on_end, on_progress)
        made.append(deliverer)
        return Bench(host, deliverer, metrics, outbox, ended, an_end, waits, goes)

    yield make
    for deliverer in made:
        assert (deliverer.sending, deliverer.waiting) == (0, 0), "a delivery was still under way"


async def stream_of_successes(bench: Bench, seconds: float, every_s: float = 0.05) -> int:
    """Other deliveries to the same host, one every `every_s`, each taken at once."""
    sent = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        bench.send(f"ok-{sent}", f"{HOST}/webhook-waiting/{1000 + sent}")
        sent += 1
        await asyncio.sleep(every_s)
    return sent


async def test_the_documented_schedule_is_the_default_one() -> None:  # async: looptime marks all
    defaults = Settings.model_validate({"jwt_secret": SECRET})
    assert (defaults.retry_base_s, defaults.callback_retry_max_s) == (BASE, CAP)
    assert defaults.callback_max_attempts == MAX_ATTEMPTS
    assert (defaults.breaker_failures, defaults.breaker_reset_s) == (5, 30.0)
    bounds = [bound(n) for n in range(1, MAX_ATTEMPTS)]
    assert bounds == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    text = " ".join(DOCS.read_text().split())
    assert "the bounds are 1, 2, 4, … 256 s, then 300 s" in text
    most, mean = sum(bounds) / 60, sum(bounds) / 2 / 60
    assert f"at most {most:.1f} minutes ({mean:.1f} on average)" in text


async def test_a_delivery_keeps_its_own_schedule_while_others_to_the_host_succeed(
    bench: Callable[..., Bench],
) -> None:
    b = bench(Host(scripts={"slow": [unavailable()] * 11}))
    b.send("slow")
    await asyncio.sleep(0.0001)
    assert b.deliverer.hosts()["n8n.test:5678"]["waiting"]["backoff"] == 1
    sent = await stream_of_successes(b, seconds=1200, every_s=0.5)
    await b.until_ended("slow", *(f"ok-{n}" for n in range(sent)))

    assert b.ended["slow"][0] is True
    assert len(b.host.attempts["slow"]) == 12
    gaps = b.gaps("slow")
    announced = [seconds for _, seconds, why in b.waits["slow"]]
    assert [why for _, _, why in b.waits["slow"]] == ["backoff"] * 11
    assert b.goes["slow"] == b.host.attempts["slow"][1:]  # each wait said over as it went
    for n, (gap, said) in enumerate(zip(gaps, announced, strict=True), start=1):
        assert gap == pytest.approx(said, abs=0.02), f"attempt {n + 1} came early"
        assert 0 <= gap <= bound(n) + 0.02
    # Not cut short: on the old code the 11 waits were over within the first ~0.1 s.
    assert sum(gaps) > 100
    assert b.ended["slow"][2] > 100
    assert b.deliverer.hosts() == {}


async def test_waits_are_full_jitter_exponential_and_capped(bench: Callable[..., Bench]) -> None:
    b = bench(Host(default=unavailable), breaker_failures=10_000)  # its back-off alone
    ids = [f"d{n}" for n in range(300)]
    for delivery_id in ids:
        b.send(delivery_id)
    await b.until_ended(*ids)

    ratios: dict[int, list[float]] = defaultdict(list)
    for delivery_id in ids:
        assert len(b.host.attempts[delivery_id]) == MAX_ATTEMPTS
        delivered, reason, _ = b.ended[delivery_id]
        assert not delivered and reason == "503 Service Unavailable (after 12 attempts)"
        for n, gap in enumerate(b.gaps(delivery_id), start=1):
            ratios[n].append(gap / bound(n))
    totals = [sum(b.gaps(delivery_id)) for delivery_id in ids]
    assert max(totals) <= sum(bound(n) for n in range(1, MAX_ATTEMPTS))
    assert statistics.mean(totals) == pytest.approx(
        sum(bound(n) for n in range(1, 12)) / 2, rel=0.05
    )
    for n, drawn in ratios.items():
        assert all(0 <= r <= 1.0001 for r in drawn), n
        # uniform on [0, 1]: mean 1/2, quartiles 1/4 and 3/4 (300 draws: ±0.05 is > 3 sd)
        assert statistics.mean(drawn) == pytest.approx(0.5, abs=0.05), n
        q1, _, q3 = statistics.quantiles(drawn, n=4)
        assert q1 == pytest.approx(0.25, abs=0.07) and q3 == pytest.approx(0.75, abs=0.07), n
    # from the 10th wait on the cap holds: 2^9 s would be more than 300 s
    assert bound(10) == bound(11) == CAP and max(ratios[11]) > 0.95


async def test_retry_after_is_honoured_when_longer_and_capped(bench: Callable[..., Bench]) -> None:
    b = bench(
        Host(
            scripts={
                "later": [Retry("429 Too Many Requests", "throttled", after_s=120.0)],
                "too-far": [Retry("503 Service Unavailable", "server_error", after_s=86400.0)],
                "sooner": [Retry("503 Service Unavailable", "server_error", after_s=0.0)],
            }
        )
    )
    for delivery_id in ("later", "too-far", "sooner"):
        b.send(delivery_id)
    sent = await stream_of_successes(b, seconds=400, every_s=0.5)
    await b.until_ended("later", "too-far", "sooner", *(f"ok-{n}" for n in range(sent)))

    assert b.gaps("later") == [pytest.approx(120.0, abs=0.02)]
    assert b.waits["later"][0][2] == "retry_after"
    assert b.gaps("too-far") == [pytest.approx(CAP, abs=0.02)]
    assert b.waits["too-far"][0][2] == "retry_after"
    assert b.waits["sooner"][0][2] == "backoff"
    assert 0 <= b.gaps("sooner")[0] <= bound(1) + 0.02


async def test_not_ready_is_retried_on_schedule_without_opening_the_breaker(
    bench: Callable[..., Bench],
) -> None:
    """n8n's 409 "is running already": the host answered, it is up. Twenty of them at once do
    not open its breaker; each is delivered on the attempt after its last 409."""
    ids = [f"r{n}" for n in range(20)]
    b = bench(Host(scripts={i: [running()] * 3 for i in ids}))
    for delivery_id in ids:
        b.send(delivery_id)
    await b.until_ended(*ids)
    for delivery_id in ids:
        assert b.ended[delivery_id][0] is True
        assert len(b.host.attempts[delivery_id]) == 4
        assert [why for _, _, why in b.waits[delivery_id]] == ["backoff"] * 3
        for n, gap in enumerate(b.gaps(delivery_id), start=1):
            assert 0 <= gap <= bound(n) + 0.02


async def test_finished_and_rejected_end_at_once(bench: Callable[..., Bench]) -> None:
    b = bench(
        Host(
            scripts={
                "finished": [
                    GiveUp("409 Conflict: n8n says the execution has finished", "finished")
                ],
                "gone": [GiveUp("404 Not Found", "rejected")],
            }
        )
    )
    b.send("finished")
    b.send("gone")
    await b.until_ended("finished", "gone")
    assert b.ended["finished"][:2] == (False, "409 Conflict: n8n says the execution has finished")
    assert b.ended["gone"][:2] == (False, "404 Not Found")
    assert len(b.host.attempts["finished"]) == len(b.host.attempts["gone"]) == 1
    assert b.outbox.kept["finished"].state == "dead"


async def test_a_breaker_opens_probes_and_closes(bench: Callable[..., Bench]) -> None:
    """The host refuses connections for 100 s. Five failures in a row open its breaker; what
    comes meanwhile waits for the breaker without spending attempts; every 30 s one probe goes;
    when a probe succeeds, what waited for the breaker goes at once — and what waits for its own
    back-off still waits it out."""
    loop = asyncio.get_running_loop()
    up_at = loop.time() + 100.0

    def down_then_up() -> Answer:
        return refused() if loop.time() < up_at else None

    b = bench(Host(default=down_then_up), callback_max_attempts=50)
    first = [f"a{n}" for n in range(5)]
    for delivery_id in first:
        b.send(delivery_id)
    await asyncio.sleep(0.001)
    assert b.deliverer.hosts()["n8n.test:5678"]["breaker"] == "open"
    later = [f"b{n}" for n in range(20)]
    for delivery_id in later:
        b.send(delivery_id)
    await asyncio.sleep(0.001)
    status = b.deliverer.hosts()["n8n.test:5678"]
    assert status["waiting"]["breaker_open"] >= 20 and status["sending"] == 0
    assert status["next_attempt_at"] is not None

    await b.until_ended(*first, *later)
    probes = sorted(t for times in b.host.attempts.values() for t in times if t < up_at)
    # five failures at 0 s; then one probe per 30 s while the host is down (at 30, 60, 90 s)
    assert len(probes) == 5 + 3
    assert probes[5:] == [pytest.approx(t, abs=0.05) for t in (30.0, 60.0, 90.0)]
    closed_at = min(t for times in b.host.attempts.values() for t in times if t >= up_at)
    assert closed_at == pytest.approx(120.0, abs=0.05)  # the first probe after the host is up
    for delivery_id in later:
        times = b.host.attempts[delivery_id]
        if times[0] < up_at:
            continue  # it was a probe
        # waited for the breaker only: sent once, as soon as the probe succeeded
        assert times == [pytest.approx(closed_at, abs=0.05)]
        assert {why for _, _, why in b.waits[delivery_id]} == {"breaker_open"}
    for delivery_id in first:
        times = b.host.attempts[delivery_id]
        assert times[0] == pytest.approx(0.0, abs=0.01)
        assert b.ended[delivery_id][0] is True


async def test_a_breaker_closing_wakes_only_what_waited_for_it(
    bench: Callable[..., Bench],
) -> None:
    """One delivery waits a Retry-After of 200 s. Meanwhile the host is down from 10 s to 50 s
    for the others: its breaker opens, is probed, and closes again. The waiting delivery's next
    attempt still comes at 200 s, not when the breaker closes."""
    loop = asyncio.get_running_loop()

    def down_from_10_to_50() -> Answer:
        return refused() if 10.0 <= loop.time() < 50.0 else None

    b = bench(
        Host(
            scripts={"own": [Retry("429 Too Many Requests", "throttled", after_s=200.0)]},
            default=down_from_10_to_50,
        )
    )
    b.send("own")
    sent = await stream_of_successes(b, seconds=150, every_s=1.0)
    await b.until_ended("own", *(f"ok-{n}" for n in range(sent)))
    assert b.gaps("own") == [pytest.approx(200.0, abs=0.02)]
    assert [why for _, _, why in b.waits["own"]] == ["retry_after"]
    assert any(why == "breaker_open" for waits in b.waits.values() for _, _, why in waits)


async def test_an_outcome_is_recorded_before_the_outbox_lets_go(
    bench: Callable[..., Bench],
) -> None:
    """The job's callback state and its event come before the delivery leaves the outbox (or
    turns dead there): a crash in between sends it again rather than lose them."""
    b = bench(Host(scripts={"gone": [GiveUp("404 Not Found", "rejected")]}))
    b.send("taken")
    b.send("gone")
    await b.until_ended("taken", "gone")
    assert [op for op in b.outbox.log if op[1] == "taken"][-2:] == [
        ("ended", "taken"),
        ("done", "taken"),
    ]
    assert [op for op in b.outbox.log if op[1] == "gone"][-2:] == [
        ("ended", "gone"),
        ("put", "gone"),
    ]


async def test_deliveries_due_wait_for_a_sending_slot_and_are_shown_so(
    bench: Callable[..., Bench],
) -> None:
    b = bench(Host(hold_s=10.0), callback_concurrency=2)
    ids = [f"q{n}" for n in range(5)]
    for delivery_id in ids:
        b.send(delivery_id)
    await asyncio.sleep(1.0)
    shown = b.deliverer.hosts()["n8n.test:5678"]
    assert (shown["sending"], shown["queued"]) == (2, 3)
    await b.until_ended(*ids)
    starts = sorted(t for delivery_id in ids for t in b.host.attempts[delivery_id])
    assert starts == [pytest.approx(t, abs=0.01) for t in (0, 0, 10, 10, 20)]
    assert b.deliverer.hosts() == {}


async def test_every_attempt_is_counted_by_outcome(bench: Callable[..., Bench]) -> None:
    b = bench(Host(scripts={"x": [running(), unavailable()]}))
    metrics = b.metrics
    zero = metrics.registry.get_sample_value(
        "bridge_webhook_attempts_total", {"kind": "event", "outcome": "refused"}
    )
    assert zero == 0.0  # exists before any attempt
    b.send("x")
    await b.until_ended("x")

    def count(outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            "bridge_webhook_attempts_total", {"kind": "callback", "outcome": outcome}
        )

    assert (count("not_ready"), count("server_error"), count("delivered")) == (1, 1, 1)
