"""Bridge → n8n: start workflows through their Webhook trigger URLs, with timeouts, retries
(backoff with jitter, honouring Retry-After) and the per-host circuit breaker.

n8n's public REST API has no call that starts a workflow run (it manages workflows, executions
and credentials; `POST /workflows/{id}/execute` was proposed in n8n-io/n8n#20304 and #27455 and
is not in 1.123), so production webhook URLs are the way in; a relative path is joined to
BRIDGE_N8N_URL.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from bridge.breaker import Breakers
from bridge.callbacks import retry_after, retry_delay
from bridge.errors import IntegrationFailed, ValidationFailed
from bridge.outbound import OutboundGuard, OutboundRefused, refuse_url
from bridge.redact import redact_url
from bridge.settings import Settings

RETRY_STATUSES = frozenset({408, 425, 429})


class N8nClient:
    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        breakers: Breakers,
        guard: OutboundGuard,
    ) -> None:
        self._settings = settings
        self._session = session
        self._breakers = breakers
        self._guard = guard

    def url_for(self, webhook: str) -> str:
        """An absolute http(s) URL, or a path joined to BRIDGE_N8N_URL."""
        if urlsplit(webhook).scheme in ("http", "https"):
            refuse_url(self._guard, webhook, "/parameters/webhook")
            return webhook
        if self._settings.n8n_url is None:
            raise ValidationFailed(
                f"{webhook!r} is a path, and BRIDGE_N8N_URL is not set: give the webhook's full "
                "URL, or set BRIDGE_N8N_URL",
                details=[{"pointer": "/parameters/webhook", "message": "not an absolute URL"}],
            )
        return urljoin(self._settings.n8n_url.rstrip("/") + "/", webhook.lstrip("/"))

    async def call(
        self, url: str, payload: Any, *, method: str = "POST", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """(status, answer) of a 2xx; IntegrationFailed otherwise — retryable unless n8n refused
        the request itself (4xx)."""
        host, breaker = self._breakers.for_url(url)
        attempts = self._settings.n8n_max_attempts
        reason = ""
        for attempt in range(1, attempts + 1):
            if breaker.wait_s():
                raise IntegrationFailed(
                    f"n8n at {host} keeps failing; not calling it for now "
                    f"({reason or 'circuit breaker open'})"
                )
            try:
                status, answer, wait = await self._once(url, payload, method, headers or {})
            except OutboundRefused as exc:
                raise IntegrationFailed(
                    f"not calling {redact_url(url)}: {exc}", retryable=False
                ) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason, wait = f"{type(exc).__name__}: {exc}".rstrip(": "), None
                breaker.failed()
            else:
                if 200 <= status < 300:
                    breaker.succeeded()
                    return status, answer
                if status < 500 and status not in RETRY_STATUSES:
                    breaker.succeeded()
                    raise IntegrationFailed(_refusal(url, status, answer), retryable=False)
                reason = f"n8n answered HTTP {status}"
                breaker.failed()
            if attempt < attempts:
                await asyncio.sleep(
                    max(retry_delay(attempt, self._settings.retry_base_s, 30.0), min(wait or 0, 30))
                )
        raise IntegrationFailed(
            f"calling n8n at {redact_url(url)} failed {attempts} times: {reason}"
        )

    async def _once(
        self, url: str, payload: Any, method: str, headers: dict[str, str]
    ) -> tuple[int, Any, float | None]:
        timeout = aiohttp.ClientTimeout(total=self._settings.n8n_timeout_s)
        body = None if method == "GET" else orjson.dumps(payload)
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        async with self._session.request(
            method, url, data=body, headers=headers, timeout=timeout
        ) as response:
            raw = await response.read()
            try:
                answer: Any = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                answer = raw.decode(errors="replace")
            return response.status, answer, retry_after(response.headers.get("Retry-After"))


def _refusal(url: str, status: int, answer: Any) -> str:
    message = answer.get("message") if isinstance(answer, dict) else answer
    text = f"n8n refused the call to {redact_url(url)}: HTTP {status}" + (
        f": {message}" if message else ""
    )
    if status == 404:
        text += (
            " — is the workflow active? (a production URL works only while the workflow is "
            "active; a test URL only while the editor listens)"
        )
    return text
