"""Failed sign-ins slow down per client address. The credentials' strength is what keeps them
safe (JWTs are signed; API keys should be long random strings, and the JSON API takes them as
readily); this makes a guessing script visible in the log and slow, one try per two seconds per
connection, without ever refusing the right credential — behind a proxy every operator may
share one address, and a lock-out there would let anyone lock everyone out."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque

log = logging.getLogger(__name__)

FAILURES = 10  # failed sign-ins an address may make within WINDOW_S before it is slowed
WINDOW_S = 300.0
DELAY_S = 2.0  # how long each further failure waits for its answer
MAX_ADDRESSES = 10_000  # the oldest address is forgotten past this: memory stays bounded


class SignInThrottle:
    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def failed(self, address: str) -> float:
        """Count a failed sign-in; how long its answer should wait (0 or DELAY_S)."""
        now = time.monotonic()
        failures = self._failures.setdefault(address, deque(maxlen=FAILURES + 1))
        failures.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        while failures and failures[0] <= now - WINDOW_S:
            failures.popleft()
        if len(failures) <= FAILURES:
            return 0.0
        log.warning(
            "more than %d failed console sign-ins from %s within %d s: each waits %g s",
            FAILURES,
            address,
            WINDOW_S,
            DELAY_S,
        )
        return DELAY_S
