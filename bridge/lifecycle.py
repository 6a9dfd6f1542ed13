"""The daemon's own state: when it started and whether it is draining."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    started: float = field(default_factory=time.monotonic)
    draining: bool = False

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def drain(self, reason: str) -> None:
        """From now on /ready answers 503, so a load balancer stops sending new work, and an
        instance on shared (Redis) queues takes no more jobs from them."""
        if not self.draining:
            self.draining = True
            log.info("draining: %s", reason)
