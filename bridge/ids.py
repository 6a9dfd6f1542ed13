"""Ids for jobs and traces."""

from __future__ import annotations

import random


def new_id() -> str:
    """128 random bits as 32 hex digits: unique and cheap (no system call). Not a secret: every
    endpoint that takes an id checks the caller's credentials first."""
    return f"{random.getrandbits(128):032x}"
