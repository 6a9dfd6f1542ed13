"""SMTP connections for `email_send`: a pool that reuses logged-in connections, bounds how many are
open (BRIDGE_SMTP_CONNECTIONS) and paces messages (BRIDGE_SMTP_RATE_PER_S)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiosmtplib

from bridge.errors import IntegrationFailed
from bridge.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


class SmtpPool:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.smtp_connections)
        self._next_send = 0.0

    @property
    def configured(self) -> bool:
        return self._settings.smtp_host is not None

    def _client(self) -> aiosmtplib.SMTP:
        settings = self._settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port or DEFAULT_PORTS[settings.smtp_tls],
            username=settings.smtp_username,
            password=password,
            use_tls=settings.smtp_tls == "tls",
            start_tls=settings.smtp_tls == "starttls",
            validate_certs=settings.smtp_validate_certs,
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            timeout=settings.smtp_timeout_s,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        """A new connection, logged in when a user is configured."""
        if not self.configured:
            raise IntegrationFailed(
                "no SMTP server configured", description="set BRIDGE_SMTP_HOST", retryable=False
            )
        client = self._client()
        where = f"{self._settings.smtp_host}:{client.port}"
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise IntegrationFailed(
                f"the SMTP server {where} refused the login: {exc.code} {exc.message}",
                description="check BRIDGE_SMTP_USERNAME and BRIDGE_SMTP_PASSWORD",
                retryable=False,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise IntegrationFailed(
                f"cannot reach the SMTP server {where}: {exc}",
                description="check BRIDGE_SMTP_HOST, BRIDGE_SMTP_PORT, BRIDGE_SMTP_TLS and, for "
                "a certificate error, BRIDGE_SMTP_CA_FILE",
            ) from None
        log.debug("connected to SMTP server %s", where)
        return client

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """A connected client, reused by later callers unless something went wrong with it."""
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            if client is None or not client.is_connected:
                client = await self._connect()
            try:
                yield client
            except BaseException:
                client.close()
                raise
            self._idle.append(client)

    async def pace(self) -> None:
        """Wait for this message's turn under BRIDGE_SMTP_RATE_PER_S."""
        rate = self._settings.smtp_rate_per_s
        if not rate:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        turn = max(now, self._next_send)
        self._next_send = turn + 1 / rate
        if turn > now:
            await asyncio.sleep(turn - now)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
