"""Ids for jobs and traces, and the shape of ids a client chooses."""

from __future__ import annotations

import random
import time

# Ids a client chooses (workflow, execution, node, idempotency key) hold no control character:
# they are written to logs, event streams and store keys.
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"


def new_id() -> str:
    """32 hex digits: a 48-bit millisecond timestamp, then 80 random bits (UUIDv7's layout).

    Time first, so new jobs land at the end of the store's primary-key index instead of at random
    places in it: with random ids, each insert into a large table cost SQLite 3-4 times as much.
    Cheap (no system call) and not a secret — every endpoint that takes an id checks credentials.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"
