"""`Server-Timing` (W3C): how long each phase of a request took, for operators and benchmarks."""

from __future__ import annotations

import time


class Timings:
    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self._phases: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        """The time since the previous mark is `phase`'s."""
        now = time.perf_counter()
        self._phases.append((phase, now - self._last))
        self._last = now

    def header(self) -> str:
        parts = [f"{name};dur={seconds * 1000:.3f}" for name, seconds in self._phases]
        parts.append(f"total;dur={(self._last - self._start) * 1000:.3f}")
        return ", ".join(parts)
