"""The retry schedule every retrying part of the bridge uses (background jobs, callbacks and
event webhooks, calls to n8n): exponential backoff with full jitter, and Retry-After read."""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import time

import backoff


def retry_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """The wait after the `attempt`-th failed attempt (1-based): a uniform draw from
    [0, min(cap_s, base_s · 2^(attempt-1))] (full jitter)."""
    waits = backoff.expo(base=2, factor=base_s, max_value=cap_s)
    next(waits)  # the generator's first step primes it
    return float(backoff.full_jitter(next(itertools.islice(waits, attempt - 1, None))))


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    with contextlib.suppress(TypeError, ValueError):
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    return None
