"""Circuit breakers, one per remote host: after `failures` failures in a row a host is left alone
for `reset_s`, then one call probes it (half-open) — success closes the breaker, failure opens
it again. Calls to a host that is down then cost nothing and do not pile up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class Breaker:
    failures_to_open: int
    reset_s: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    _closed: asyncio.Event | None = field(default=None, repr=False)

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.reset_s else "open"

    def wait_s(self) -> float:
        """0 when a call may go now; else how long until it may (a probe is already out, or
        the breaker is open)."""
        state = self.state
        if state == "closed":
            return 0.0
        if state == "half_open" and not self.probing:
            self.probing = True
            return 0.0
        assert self.opened_at is not None
        return max(self.opened_at + self.reset_s - time.monotonic(), 0.0) or self.reset_s / 10

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if a call to the host succeeds meanwhile: once it is back,
        what waits for it goes at once, not after its own back-off."""
        if self._closed is None:
            self._closed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False
        if self._closed is not None:
            self._closed.set()  # wakes every pause; the next one waits on a new event
            self._closed = None

    def failed(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.failures_to_open:
            self.opened_at = time.monotonic()
        self.probing = False


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
    def __init__(self, failures_to_open: int, reset_s: float) -> None:
        self._failures = failures_to_open
        self._reset_s = reset_s
        self._by_host: dict[str, Breaker] = {}

    def for_host(self, host: str) -> Breaker:
        breaker = self._by_host.get(host)
        if breaker is None:
            breaker = self._by_host[host] = Breaker(self._failures, self._reset_s)
        return breaker

    def states(self) -> dict[str, BreakerState]:
        return {host: breaker.state for host, breaker in self._by_host.items()}
