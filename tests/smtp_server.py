"""A real SMTP server on loopback for the tests (aiosmtpd), which records what it accepted and can
refuse recipients, require a login, or drop the connection in the middle of a message."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER, PASSWORD = "mailer", "s3cret-password"

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")  # Linux: the kernel's range


@dataclass
class Sink:
    """The handler: what was accepted, and the faults to play."""

    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # each accepted DATA, as it came off the wire
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)  # MAIL FROM, RCPT TOs
    drop_data_at: set[int] = field(default_factory=set)  # the n-th DATA (1-based) is dropped
    data_seen: int = 0
    arrived_at: list[float] = field(default_factory=list)  # time.monotonic() of each message
    delay_s: float = 0.0  # before accepting each message: a slow server keeps sends in flight

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if "refuse" in address:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_seen += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.data_seen in self.drop_data_at:
            server.transport.close()  # gone before saying whether the message was taken
            return "421 closing"
        self.raw.append(envelope.original_content)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        message = message_from_bytes(envelope.content, policy=policy.SMTP)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)  # type: ignore[arg-type]
        self.arrived_at.append(time.monotonic())
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
    """A free loopback port for a server to take later, below the kernel's ephemeral range: a
    port from that range may go to any outgoing connection between this check and the server's
    bind (n8n once lost its port so, on a busy machine)."""
    lowest = int(EPHEMERAL.read_text().split()[0]) if EPHEMERAL.exists() else 32768
    for _ in range(200):
        port = random.randrange(10000, lowest)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def self_signed(directory: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_file, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_file, key_file


def start(
    sink: Sink,
    *,
    require_auth: bool = False,
    tls: tuple[str, str] | None = None,
    implicit_tls: bool = False,
) -> Controller:
    """The server on a free port: plain, with STARTTLS required, or with implicit TLS."""
    options: dict[str, Any] = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        options = (
            {"ssl_context": context}
            if implicit_tls
            else {"tls_context": context, "require_starttls": True}
        )
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_authenticate,
        auth_required=require_auth,
        auth_require_tls=False,
        **options,
    )
    controller.start()
    return controller
