"""Circuit breakers, one per remote host: after `failures` failures in a row a host is left alone
for `reset_s`, then one call probes it (half-open) — success closes the breaker, failure opens
it again. Calls to a host that is down then cost nothing and do not pile up.

What waits for a breaker (`until_changed`) is woken when it closes or opens again, never by
anything else: a delivery's own back-off is its own (bridge/callbacks.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

BreakerState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]
MIN_WAIT_S = 0.001


@dataclass
class Breaker:
    failures_to_open: int
    reset_s: float
    clock: Clock = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probe_since: float | None = None  # a probe is out (half-open); it is given up after reset_s
    _changed: asyncio.Event | None = field(default=None, repr=False)

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "open" if self._open_for() > 0 else "half_open"

    def wait_s(self) -> float:
        """0 when a call may go now (the first call of a half-open breaker is its probe); else
        how long until it may: the rest of the open time, or — while a probe is out — until
        the probe could be given up for lost. Never a wait too short for the clock to pass."""
        if self.opened_at is None:
            return 0.0
        if (open_for := self._open_for()) > 0:
            return max(open_for, MIN_WAIT_S)
        now = self.clock()
        probe_for = 0.0 if self.probe_since is None else self.probe_since + self.reset_s - now
        if probe_for <= 0:
            self.probe_since = now
            return 0.0
        return max(probe_for, MIN_WAIT_S)

    def _open_for(self) -> float:
        assert self.opened_at is not None
        return self.opened_at + self.reset_s - self.clock()

    async def until_changed(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the breaker closes or opens again meanwhile."""
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    def succeeded(self) -> None:
        was_open = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        self.probe_since = None
        if was_open:
            self._wake()

    def failed(self) -> None:
        self.failures += 1
        probed = self.probe_since is not None
        if probed or self.failures >= self.failures_to_open:
            self.opened_at = self.clock()
        self.probe_since = None
        if probed:
            self._wake()  # those that waited for the probe wait for the next one

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()  # wakes every waiter; the next ones wait on a new event
            self._changed = None


def host_of(url: str) -> str:
    """A URL's `host:port`, without userinfo: the breaker's key, and how a host is shown."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{shown}:{port}" if port else shown


class Breakers:
    def __init__(
        self, failures_to_open: int, reset_s: float, clock: Clock = time.monotonic
    ) -> None:
        self._failures = failures_to_open
        self._reset_s = reset_s
        self._clock = clock
        self._by_host: dict[str, Breaker] = {}

    def for_host(self, host: str) -> Breaker:
        breaker = self._by_host.get(host)
        if breaker is None:
            breaker = Breaker(self._failures, self._reset_s, self._clock)
            self._by_host[host] = breaker
        return breaker

    def states(self) -> dict[str, BreakerState]:
        return {host: breaker.state for host, breaker in self._by_host.items()}
