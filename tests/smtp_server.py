"""A real SMTP server on loopback for the tests (aiosmtpd), which records what it accepted and can
refuse recipients, require a login, or drop the connection in the middle of a message."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "mailer", "s3cret-password"


@dataclass
class Sink:
    """The handler: what was accepted, and the faults to play."""

    messages: list[EmailMessage] = field(default_factory=list)
    drop_data_at: set[int] = field(default_factory=set)  # the n-th DATA (1-based) is dropped
    data_seen: int = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if "refuse" in address:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_seen += 1
        if self.data_seen in self.drop_data_at:
            server.transport.close()  # gone before saying whether the message was taken
            return "421 closing"
        message = message_from_bytes(envelope.content, policy=policy.SMTP)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 2.0.0 accepted"

    def with_header(self, name: str, value: str) -> list[EmailMessage]:
        return [m for m in self.messages if m[name] == value]


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USER
        and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, handled=False)  # let aiosmtpd send 535 on failure


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(sink: Sink, *, require_auth: bool = False) -> Controller:
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_authenticate,
        auth_required=require_auth,
        auth_require_tls=False,
    )
    controller.start()
    return controller
