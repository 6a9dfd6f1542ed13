"""Failed sign-ins are bounded per client address: credentials are long random strings, so this
is not what keeps them safe; it keeps a guessing script from costing the bridge CPU (every try
is a hash or a signature check) and makes it visible in the log."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque

log = logging.getLogger(__name__)

FAILURES = 10  # failed sign-ins an address may make within WINDOW_S
WINDOW_S = 300.0
MAX_ADDRESSES = 10_000  # the oldest address is forgotten past this: memory stays bounded


class SignInThrottle:
    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - WINDOW_S:
            failures.popleft()
        return failures

    def wait_s(self, address: str) -> float:
        """0 if the address may try now; else how long until it may."""
        now = time.monotonic()
        failures = self._recent(address, now)
        if len(failures) < FAILURES:
            return 0.0
        return failures[0] + WINDOW_S - now

    def failed(self, address: str) -> None:
        now = time.monotonic()
        failures = self._failures.setdefault(address, deque(maxlen=FAILURES))
        failures.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        if len(self._recent(address, now)) == FAILURES:
            log.warning(
                "%d failed console sign-ins from %s within %d s: refusing it for a while",
                FAILURES,
                address,
                WINDOW_S,
            )
