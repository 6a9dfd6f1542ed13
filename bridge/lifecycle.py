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
    stopping: bool = False  # draining for good: the process is shutting down

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def drain(self, reason: str) -> None:
        """From now on /ready answers 503, so a load balancer stops sending new work, and an
        instance on shared (Redis) queues takes no more jobs from them."""
        if not self.draining:
            self.draining = True
            log.info("draining: %s", reason)

    def stop(self) -> None:
        """Shutting down: drain, and for good."""
        self.drain("shutting down")
        self.stopping = True

    def resume(self, reason: str) -> bool:
        """Serve again after a drain (a blue-green rollback); False when shutting down."""
        if self.stopping:
            return False
        if self.draining:
            self.draining = False
            log.info("serving again: %s", reason)
        return True
