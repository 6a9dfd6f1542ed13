"""What processors running on the event loop may use besides their items: the app's long-lived
connections and stores. Processors in the process pool get none (these cannot cross processes)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.smtp import SmtpPool
from bridge.stores.base import Ledger


@dataclass(frozen=True, slots=True)
class Services:
    ledger: Ledger
    smtp: SmtpPool
