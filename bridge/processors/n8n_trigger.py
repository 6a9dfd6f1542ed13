"""`n8n_trigger`: start an n8n workflow (through its Webhook trigger) for each item, or once for
all items — the way the router sends work back to n8n.

With an idempotency key (the request's, plus the item's index), each call is claimed in the
ledger first and recorded after n8n took it: a retried job does not start the workflow twice, and
a call whose outcome is unknown (the bridge died mid-call) is reported, not repeated.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from bridge.errors import IntegrationFailed, Internal
from bridge.items import Item
from bridge.n8n_client import AnswerTooLarge, N8nClient
from bridge.processors.registry import Context, processor
from bridge.services import Services
from bridge.stores.base import Ledger

CALLS_AT_ONCE = 8
MAX_HEADERS = 20

# Headers a workflow may not set: those that frame or route the request (the HTTP client sets
# them, and a wrong one desynchronises the connection or reaches another virtual host), those
# that speak for a proxy or for the client's network address (a target may trust them), those
# that make a reverse proxy or framework in front of n8n — the one host the production policy
# lets out — serve another path, host, scheme or method than the one called (X-Original-URL,
# X-HTTP-Method-Override, Max-Forwards, …), and the bridge's own (a target may trust those too).
# Credentials (Authorization, Cookie, API keys) are the workflow's own to send.
#
# Proxies and frameworks keep inventing such names (X-Cluster-Client-IP, Fastly-Client-IP,
# X-ProxyUser-Ip, X-HTTP-Host-Override, …), so beyond a list they are refused by rule: by the
# words of the name, split at `-`, `_` and `.` (CGI-style servers read X_Forwarded_For and
# X-Forwarded-For alike).
RESERVED_HEADERS = frozenset(
    {
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "via",
        "max-forwards",
        "x-http-method",
        "x-middleware-subrequest",
        "x-trace-id",
        "idempotency-key",
        "front-end-https",
    }
)
RESERVED_PREFIXES = (
    "content-",  # the body is the bridge's: its type, length, encoding, range, language
    "proxy-",
    "x-forwarded-",
    "x-original-",
    "x-rewrite-",
    "x-real-",
    "true-client-",
    "cf-connecting-",
    "x-envoy-",
    "x-bridge-",
    "webhook-",
    # what a cloud front end, platform or proxy asserts to the service behind it
    "cf-",
    "x-amzn-",
    "x-goog-",
    "x-ms-",
    "x-azure-",
    "x-arr-",
    "x-now-",
    "x-vercel-",
    "x-nginx-",
    "fly-",
    "x-appengine-",
    "x-cloud-",
)
# A word that names what a proxy asserts about the request or its sender: a network address or
# host (Client-IP, X-Backend-Host), scheme or TLS (X-Scheme, X-ARR-SSL, Https), port, path or
# route (X-Script-Name, X-Request-URI), method, server name, an authenticated identity
# (X-Auth-Request-User, X-Amzn-Oidc-Identity), a client certificate and its check
# (X-SSL-Client-Verify), the client's country.
ADDRESS_WORDS = frozenset(
    {
        *("ip", "ips", "ipv4", "ipv6", "addr", "address", "host", "hostname", "socketip"),
        *("scheme", "proto", "protocol", "http", "https", "ssl", "tls", "port"),
        *("uri", "url", "path", "route", "routing", "matches", "script", "ingress", "invoke"),
        *("method", "server", "country", "prefix"),
        *("user", "userid", "username", "email", "identity", "principal", "oidc"),
        *("authenticated", "assertion", "webauth", "cert", "certificate", "verify", "dn"),
    }
)
# Names with such a word that are ordinary requests' own: the client's software, not its user.
ORDINARY_HEADERS = frozenset({"user-agent"})
# Inside the name with its separators removed: X-ClientIP, X-Originating-IP, Remote-User,
# X-HTTP-Host-Override, X-Url-Scheme, …
RESERVED_PARTS = (
    "forwarded",
    "clientip",
    "clientaddr",
    "originating",
    "realip",
    "remote",
    "override",
    "proxy",
    "urlscheme",
)
_WORD_BREAK = re.compile(r"[-_.]+")


def reserved(name: str) -> bool:
    """Whether a header name is the bridge's, its HTTP client's, or speaks for a proxy or a
    client address, by the list or by rule."""
    words = [word for word in _WORD_BREAK.split(name.lower()) if word]
    dashed, joined = "-".join(words), "".join(words)
    if dashed in ORDINARY_HEADERS:
        return False
    return (
        dashed in RESERVED_HEADERS
        or f"{dashed}-".startswith(RESERVED_PREFIXES)
        or any(word in ADDRESS_WORDS for word in words)
        or any(part in joined for part in RESERVED_PARTS)
    )


def _not_reserved(name: str) -> str:
    if reserved(name):
        raise ValueError(
            f"{name} is set by the bridge or its HTTP client, or speaks for a proxy, a client "
            "address or an override of the path, host or method; it cannot be given"
        )
    return name


# An RFC 9110 token; values: visible ASCII and spaces (no control character, no line break
# of any kind, nothing a server might decode into one).
HeaderName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"),
    AfterValidator(_not_reserved),
]
HeaderValue = Annotated[str, StringConstraints(max_length=4096, pattern=r"^[\x20-\x7e]*$")]


class TriggerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook: str = Field(
        min_length=1,
        max_length=2048,
        description="the Webhook trigger's URL, or its path (webhook/...) under BRIDGE_N8N_URL; "
        "no fragment (#: never sent)",
    )
    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    per: Literal["item", "job"] = Field(
        "item",
        description="item: one call per item (its json as the body); job: one call "
        'with every item (`{"items": [...]}`)',
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description="extra request headers (up to 20; not Host, Content-*, Transfer-Encoding, "
        "Connection, Upgrade, TE, Trailer, Expect, Via, Proxy-*, Max-Forwards, the bridge's own "
        "X-Bridge-*, X-Trace-ID, Idempotency-Key, webhook-*, nor any name that speaks for what a "
        "proxy in front of n8n asserts: see docs/security.md; User-Agent is allowed)",
    )
    result_field: str = Field("n8n", min_length=1, description="where n8n's answer goes")

    @field_validator("webhook")
    @classmethod
    def _callable(cls, value: str, info: ValidationInfo) -> str:
        """When a request is accepted: the URL as it will be called, judged by the guard."""
        services = info.context
        if isinstance(services, Services) and services.n8n is not None:
            services.n8n.url_for(value)  # raises ValidationFailed, pointing at the webhook
        return value


@processor("n8n_trigger", params=TriggerParams, batch=True, max_attempts=3)
async def n8n_trigger(items: list[Item], params: TriggerParams, ctx: Context) -> list[Any]:
    """Starts an n8n workflow through its Webhook trigger, per item or once per job."""
    if ctx.services is None or ctx.services.n8n is None:
        raise Internal("n8n_trigger needs the bridge's services (it cannot run in a process pool)")
    client, ledger = ctx.services.n8n, ctx.services.ledger
    url = client.url_for(params.webhook)
    headers = {**params.headers, "X-Bridge-Job-ID": ctx.job_id, "X-Trace-ID": ctx.trace_id}
    if params.per == "job":
        payload = {"items": [item.json for item in items], "job_id": ctx.job_id}
        answer = await _call(client, ledger, url, payload, params, headers, _key(ctx, "all"))
        if isinstance(answer, Exception):
            raise answer
        return [{**item.json, params.result_field: answer} for item in items]
    gate = asyncio.Semaphore(CALLS_AT_ONCE)

    async def one(item: Item) -> Any:
        async with gate:
            answer = await _call(
                client, ledger, url, item.json, params, headers, _key(ctx, str(item.index))
            )
        return (
            answer if isinstance(answer, Exception) else {**item.json, params.result_field: answer}
        )

    return list(await asyncio.gather(*(one(item) for item in items)))


def _key(ctx: Context, part: str) -> str | None:
    return f"n8n:{ctx.idempotency_key}:{part}" if ctx.idempotency_key else None


async def _call(
    client: N8nClient,
    ledger: Ledger,
    url: str,
    payload: Any,
    params: TriggerParams,
    headers: dict[str, str],
    key: str | None,
) -> dict[str, Any] | Exception:
    if key is not None:
        entry = await ledger.claim(key)
        if entry is not None:
            if entry.state == "sent":
                return {**(entry.result or {}), "duplicate": True}
            return IntegrationFailed(
                f"the call with idempotency key {key.removeprefix('n8n:')!r} started earlier and "
                "its outcome is unknown; it is not made again",
                retryable=False,
            )
        headers = {**headers, "Idempotency-Key": key.removeprefix("n8n:")}
    try:
        status, answer = await client.call(url, payload, method=params.method, headers=headers)
    except AnswerTooLarge as exc:
        if key is not None:  # n8n took it: a retry must not call again
            await ledger.settle(key, {"status": exc.status, "response": None, "duplicate": False})
        return exc
    except IntegrationFailed as exc:
        if key is not None:
            await ledger.release(key)  # n8n did not take it: a retry may call again
        return exc
    result = {"status": status, "response": answer, "duplicate": False}
    if key is not None:
        await ledger.settle(key, result)
    return result
