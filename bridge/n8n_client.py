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
from yarl import URL

from bridge import given_url
from bridge.breaker import Breakers, host_of
from bridge.errors import IntegrationFailed, ValidationFailed
from bridge.http_client import ResponseTooLarge, failure, read_capped, status_text
from bridge.outbound import OutboundGuard, OutboundRefused, refuse_url
from bridge.redact import redact_url
from bridge.retry import retry_after, retry_delay
from bridge.settings import Settings

RETRY_STATUSES = frozenset({408, 425, 429})
POINTER = "/parameters/webhook"


class AnswerTooLarge(IntegrationFailed):
    """n8n took the call, but its answer was longer than the bridge reads: not repeated."""

    def __init__(self, url: str, status: int, exc: ResponseTooLarge) -> None:
        super().__init__(
            f"n8n at {redact_url(url)} answered HTTP {status}, but {exc}", retryable=False
        )
        self.status = status


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
        """The URL a webhook is called at: an absolute http(s) URL the guard lets out, or a path
        joined under BRIDGE_N8N_URL. ValidationFailed (pointing at the webhook) for anything
        else — checked when a request is accepted, and again before the call."""
        reason = given_url.problem(webhook)
        if reason is not None:
            raise _bad_webhook(webhook, reason)
        split = urlsplit(webhook)
        if split.scheme or split.netloc:
            refuse_url(self._guard, webhook, POINTER)
            return webhook
        if self._settings.n8n_url is None:
            raise ValidationFailed(
                f"{webhook!r} is a path, and BRIDGE_N8N_URL is not set: give the webhook's full "
                "URL, or set BRIDGE_N8N_URL",
                details=[{"pointer": POINTER, "message": "not an absolute URL"}],
            )
        # The operator's URL in the form the client sends (encoded), the webhook's path as given.
        base = str(URL(self._settings.n8n_url)).rstrip("/") + "/"
        url = urljoin(base, webhook.lstrip("/"))
        if not url.startswith(base):
            raise _bad_webhook(webhook, "a path stays under BRIDGE_N8N_URL")
        return url

    async def call(
        self, url: str, payload: Any, *, method: str = "POST", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """(status, answer) of a 2xx; IntegrationFailed otherwise — retryable unless n8n refused
        the request itself (4xx). Errors say what happened in the bridge's words, never with
        the remote answer's text."""
        host = host_of(url)
        breaker = self._breakers.for_host(host)
        attempts = self._settings.n8n_max_attempts
        reason = ""
        for attempt in range(1, attempts + 1):
            if breaker.wait_s():
                raise IntegrationFailed(
                    f"n8n at {redact_url(url)} keeps failing; not calling it for now "
                    f"({reason or 'circuit breaker open'})"
                )
            try:
                status, answer, wait = await self._once(url, payload, method, headers or {})
            except AnswerTooLarge:
                breaker.succeeded()  # n8n answered: it is up
                raise
            except OutboundRefused as exc:
                raise IntegrationFailed(
                    f"not calling {redact_url(url)}: {exc}", retryable=False
                ) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason, wait = failure(exc), None
                breaker.failed()
            else:
                if 200 <= status < 300:
                    breaker.succeeded()
                    return status, answer
                if status < 500 and status not in RETRY_STATUSES:
                    breaker.succeeded()
                    raise IntegrationFailed(_refusal(url, status), retryable=False)
                reason = f"n8n answered {status_text(status)}"
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
            method, given_url.as_called(url), data=body, headers=headers, timeout=timeout
        ) as response:
            status = response.status
            if not 200 <= status < 300:  # not read: its text is never shown
                return status, None, retry_after(response.headers.get("Retry-After"))
            try:
                raw = await read_capped(response, self._settings.outbound_max_response_bytes)
            except ResponseTooLarge as exc:
                raise AnswerTooLarge(url, status, exc) from None
            try:
                answer: Any = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                answer = raw.decode(errors="replace")
            return status, answer, None


def _bad_webhook(webhook: str, rule: str) -> ValidationFailed:
    return ValidationFailed(
        f"webhook: {redact_url(webhook)!r} is neither an http(s) URL nor a path: {rule}",
        details=[{"pointer": POINTER, "message": rule}],
    )


def _refusal(url: str, status: int) -> str:
    text = f"n8n refused the call to {redact_url(url)}: {status_text(status)}"
    if status == 404:
        text += (
            " — is the workflow active? (a production URL works only while the workflow is "
            "active; a test URL only while the editor listens)"
        )
    return text
