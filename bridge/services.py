"""What processors running on the event loop may use besides their items: the app's long-lived
connections and stores. Processors in the process pool get none (these cannot cross processes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.smtp import SmtpPool
from bridge.stores.base import Ledger

if TYPE_CHECKING:  # the client imports the package that imports this module
    from bridge.n8n_client import N8nClient


@dataclass(frozen=True, slots=True)
class Services:
    ledger: Ledger
    smtp: SmtpPool
    n8n: N8nClient | None = None
