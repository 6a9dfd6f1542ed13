"""Job and trace ids."""

from __future__ import annotations

import time

from bridge.ids import new_id


def test_ids_are_unique_hex_and_ordered_by_time() -> None:
    first = [new_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_id()
    assert len(set(first)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in first)
    assert later > max(first)
    stamped_ms = int(later[:12], 16)
    assert abs(stamped_ms / 1000 - time.time()) < 60  # the clock, give or take
