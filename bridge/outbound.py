"""Where the bridge may send HTTP requests: a guard against server-side request forgery.

Callback URLs, event-webhook URLs and `n8n_trigger` webhooks come from API callers. Without a
guard, a caller could make the bridge call its host's cloud metadata service (169.254.169.254)
and read the answer back from the dead letters. `BRIDGE_OUTBOUND_DENY` (default: link-local,
metadata, unspecified and multicast addresses) is refused always; a non-empty
`BRIDGE_OUTBOUND_ALLOW` is the only place requests may go. Entries are networks (`10.0.0.0/8`,
`fd00::/8`, `192.0.2.7`), host names (`n8n.example.com`) or domains (`.example.com`).

Checked twice: when a URL is accepted (by its host: a literal address or a name), and when a
request goes out — the resolver checks every address a name resolves to, at connect time, so a
name that resolves elsewhere later (DNS rebinding) is caught too. Loopback and private networks
are allowed by default: n8n usually runs next to the bridge.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import ClientRequest, ClientResponse
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_middlewares import ClientHandlerType
from aiohttp.resolver import DefaultResolver

from bridge.errors import ValidationFailed
from bridge.redact import redact_url

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENY = (
    "169.254.0.0/16",  # link-local: AWS, GCP, Azure, OpenStack metadata (169.254.169.254), ECS
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "0.0.0.0/8",  # "this host": reaches the bridge's own machine on Linux
    "::/128",
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "255.255.255.255/32",
    "metadata.google.internal",
    "metadata.goog",
)


class OutboundRefused(Exception):
    """A request the guard does not let out; permanent (retrying would not change it)."""


def refuse_url(guard: OutboundGuard, url: str, pointer: str) -> None:
    """422 for a URL the caller gave that the bridge will not call."""
    reason = guard.refusal(url)
    if reason is not None:
        raise ValidationFailed(
            f"{pointer.lstrip('/')}: the bridge does not call {redact_url(url)!r}: {reason}",
            description="use the address n8n is reached at; operators set "
            "BRIDGE_OUTBOUND_ALLOW / BRIDGE_OUTBOUND_DENY",
            details=[{"pointer": pointer, "message": reason}],
        )


def parse_entry(entry: str) -> Network | str:
    """A network, or a lower-case host name / `.domain`; ValueError when it is neither."""
    text = entry.strip().lower()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = text.removeprefix(".")
    labels = name.split(".")
    if not name or not all(label and len(label) <= 63 for label in labels):
        raise ValueError(f"{entry!r} is neither a network (10.0.0.0/8) nor a host name")
    if not all(c.isalnum() or c in "-_" for label in labels for c in label):
        raise ValueError(f"{entry!r} is neither a network (10.0.0.0/8) nor a host name")
    return text


def _address(host: str) -> Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return address


class OutboundGuard:
    def __init__(self, allow: Sequence[str], deny: Sequence[str]) -> None:
        self._allow = [parse_entry(entry) for entry in allow]
        self._deny = [parse_entry(entry) for entry in deny]
        # The verdict depends on the host alone, and a bridge calls few hosts: judge each once.
        self._host_refusal = functools.lru_cache(maxsize=1024)(self._judge_host)

    def refusal(self, url: str) -> str | None:
        """Why a URL may not be called, judged by its host alone (no DNS); None if it may."""
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        if not host:
            return f"{redact_url(url)!r} has no host"
        return self._host_refusal(host)

    def _judge_host(self, host: str) -> str | None:
        address = _address(host)
        if address is not None:
            return self._judge_address(host, address)
        if self._matches_name(self._deny, host):
            return f"{host} is refused by BRIDGE_OUTBOUND_DENY"
        # A name the allow list does not name may still resolve into an allowed network:
        # that is decided when it is resolved.
        return None

    def check_resolved(self, host: str, addresses: Sequence[str]) -> None:
        """Raise OutboundRefused unless every address `host` resolved to may be called."""
        host = host.lower().rstrip(".")
        named = self._matches_name(self._allow, host)
        for text in addresses:
            address = _address(text)
            if address is None:
                continue
            if self._matches_net(self._deny, address):
                raise OutboundRefused(
                    f"{host} resolves to {address}, which BRIDGE_OUTBOUND_DENY refuses"
                )
            if self._allow and not named and not self._matches_net(self._allow, address):
                raise OutboundRefused(
                    f"{host} resolves to {address}, which BRIDGE_OUTBOUND_ALLOW does not list"
                )

    def _judge_address(self, host: str, address: Address) -> str | None:
        if self._matches_net(self._deny, address):
            return (
                f"{host} is refused by BRIDGE_OUTBOUND_DENY (by default: link-local, cloud "
                "metadata, unspecified and multicast addresses)"
            )
        if self._allow and not self._matches_net(self._allow, address):
            return f"{host} is not in BRIDGE_OUTBOUND_ALLOW"
        return None

    @staticmethod
    def _matches_net(entries: Sequence[Network | str], address: Address) -> bool:
        return any(
            not isinstance(entry, str) and address.version == entry.version and address in entry
            for entry in entries
        )

    @staticmethod
    def _matches_name(entries: Sequence[Network | str], host: str) -> bool:
        return any(
            isinstance(entry, str)
            and (host == entry or (entry.startswith(".") and host.endswith(entry)))
            for entry in entries
        )

    async def middleware(
        self, request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        """Every outgoing request, redirects included, by its host."""
        reason = self.refusal(str(request.url))
        if reason is not None:
            raise OutboundRefused(reason)
        return await handler(request)


class GuardedResolver(AbstractResolver):
    """The default resolver, with every answer checked by the guard before a connection."""

    def __init__(self, guard: OutboundGuard) -> None:
        self._guard = guard
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        self._guard.check_resolved(host, [result["host"] for result in results])
        return results

    async def close(self) -> None:
        await self._resolver.close()
