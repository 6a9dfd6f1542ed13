"""Where the bridge may send HTTP requests: a guard against server-side request forgery.

Callback URLs, event-webhook URLs and `n8n_trigger` webhooks come from API callers. Without a
guard, a caller could make the bridge call its host's cloud metadata service (169.254.169.254),
or in production any service on its loopback or private network, and read the answer back.

The rules, in order:
1. `BRIDGE_OUTBOUND_DENY` (default: link-local, cloud metadata, unspecified and multicast
   addresses) is refused always.
2. The host and port of `BRIDGE_N8N_URL`, and host names `BRIDGE_OUTBOUND_ALLOW` names, may be
   called (whatever they resolve to, unless denied).
3. A non-empty `BRIDGE_OUTBOUND_ALLOW` is the only place other requests may go.
4. `BRIDGE_OUTBOUND_POLICY=private-denied` (the default with `BRIDGE_ENV=production`) refuses
   every address that is not globally reachable (`is_global`: loopback, private, shared,
   link-local, documentation, … — the IANA special-purpose registries) and names that are
   loopback or local by definition (`localhost`, `.local`, `.internal`, one label, …) unless
   `BRIDGE_OUTBOUND_ALLOW` lists them; `private-allowed` (the default in dev) lets them be
   called, as n8n usually runs next to the bridge.

An address is judged as what it reaches, whatever its spelling: IPv4 in any form the system's
parser takes (`0x7f.1`; digits-and-dots forms other than a.b.c.d, which aiohttp refuses, are
refused), IDNA-mapped characters, and IPv6
forms that carry an IPv4 address (mapped, SIIT, IPv4-compatible, NAT64, 6to4, Teredo) are judged
as the IPv4 address(es) they carry as well.

Checked twice: when a URL is accepted (by its host: a literal address, or a name that is local
by definition; no DNS), and
when each request goes out, redirects included — a literal address in the request's URL by the
client middleware, a name by the resolver, which judges every address it resolves to before a
connection is made (so a name that resolves elsewhere later, DNS rebinding, is caught too).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from aiohttp import ClientRequest, ClientResponse
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_middlewares import ClientHandlerType
from aiohttp.resolver import DefaultResolver
from yarl import URL

from bridge.errors import ValidationFailed
from bridge.redact import redact_url

if TYPE_CHECKING:  # settings import this module's defaults
    from bridge.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Policy = Literal["private-denied", "private-allowed"]

DEFAULT_DENY = (
    "169.254.0.0/16",  # link-local: AWS, GCP, Azure, OpenStack metadata (169.254.169.254), ECS
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure's wire server (platform agent, DNS, health probes)
    "192.0.0.192/32",  # Oracle Cloud metadata
    "0.0.0.0/8",  # "this host": reaches the bridge's own machine on Linux
    "::/128",
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "255.255.255.255/32",
    "metadata.google.internal",
    "metadata.goog",
)

# The private-denied policy refuses every address that is not globally reachable: Python's
# `is_global` (the IANA special-purpose registries, as the running Python knows them), and what
# it misses on some supported version — newer registry entries, multicast (not "special
# purpose", never a webhook), IPv6 site-local and anything outside global unicast 2000::/3.
NOT_GLOBAL = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.0.0.0/24",  # IETF protocol assignments (refused whole: no webhook there)
        "192.0.2.0/24",  # documentation
        "198.51.100.0/24",
        "203.0.113.0/24",
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "224.0.0.0/4",  # multicast
        "100:0:0:1::/64",  # dummy IPv6 prefix
        "2001::/23",  # IETF protocol assignments (its global exceptions are given below)
        "2001:db8::/32",  # documentation
        "3fff::/20",
        "2002::/16",  # 6to4 (judged as what it carries as well)
        "5f00::/16",  # segment routing SIDs
        "fec0::/10",  # site-local (deprecated, still routed by some stacks)
        "ff00::/8",  # multicast
    )
)
# Globally reachable entries of the registry inside a refused block above.
GLOBAL_EXCEPTIONS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "2001:1::1/128",
        "2001:1::2/128",
        "2001:1::3/128",
        "2001:3::/32",
        "2001:4:112::/48",
        "2001:20::/28",
        "2001:30::/28",
    )
)
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_WELL_KNOWN_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # judged by the IPv4 it carries

# Host names that reach this machine, or a local network only, whatever a DNS answer says; the
# private-denied policy refuses them when a URL is given. Loopback by definition (RFC 6761
# `localhost`; the names Debian and Red Hat put in /etc/hosts), judged as 127.0.0.1 and ::1:
LOOPBACK_NAMES = ("localhost", ".localhost", "ip6-localhost", "ip6-loopback")
# Resolved on a local network only: RFC 6762 multicast DNS (`.local`) and the names its
# appendix G finds used privately, RFC 8375 home networks, ICANN's private-use `.internal`
# (2024), `.localdomain`. A name of one label is too: ICANN allows no dotless names (SAC053),
# so it resolves through the hosts file or a search domain.
LOCAL_DOMAINS = (
    ".local",
    ".home.arpa",
    ".internal",
    ".localdomain",
    ".lan",
    ".intranet",
    ".corp",
    ".home",
    ".private",
)
_LOOPBACK = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def is_global(address: Address) -> bool:
    """Whether the IANA special-purpose registries call `address` globally reachable."""
    if any(address in net for net in GLOBAL_EXCEPTIONS if net.version == address.version):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST:
        return address in _WELL_KNOWN_NAT64
    return address.is_global and not any(
        address in net for net in NOT_GLOBAL if net.version == address.version
    )


def local_name(name: str) -> Literal["loopback", "local"] | None:
    """Whether a (lower-case, dotless-ended) host name is loopback or local by definition."""
    if name in LOOPBACK_NAMES or name.endswith(LOOPBACK_NAMES[1]):
        return "loopback"
    if "." not in name or name.endswith(LOCAL_DOMAINS):
        return "local"
    return None


# IPv6 forms that carry an IPv4 address in their low 32 bits.
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class OutboundRefused(Exception):
    """A request the guard does not let out; permanent (retrying would not change it)."""


def refuse_url(guard: OutboundGuard, url: str, pointer: str) -> None:
    """422 for a URL the caller gave that the bridge will not call."""
    reason = guard.refusal(url)
    if reason is not None:
        raise ValidationFailed(
            f"{pointer.lstrip('/')}: the bridge does not call {redact_url(url)}: {reason}",
            description="use the address n8n is reached at; operators set "
            "BRIDGE_OUTBOUND_ALLOW / BRIDGE_OUTBOUND_DENY / BRIDGE_OUTBOUND_POLICY",
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


def _looks_numeric(host: str) -> bool:
    """Whether the HTTP client takes `host` for an address rather than a name to resolve (as
    aiohttp's `is_ip_address` does): such a host is connected to without the resolver."""
    return ":" in host or host.replace(".", "").isdigit()


def literal_address(host: str) -> Address | None:
    """The address a literal host reaches, parsed as the system parses it (so `2130706433`,
    `0x7f.1`, `127.1` and `0177.0.0.1` are 127.0.0.1); None for a name (or a malformed one)."""
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        try:  # numeric only: never a DNS query
            info = socket.getaddrinfo(bare, None, flags=socket.AI_NUMERICHOST)
        except (OSError, UnicodeError, ValueError):
            return None
        address = ipaddress.ip_address(info[0][4][0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if address.scope_id:
            return ipaddress.IPv6Address(address.compressed.split("%")[0])
    return address


def carried(address: Address) -> Iterator[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (SIIT, IPv4-compatible, NAT64, 6to4,
    Teredo's server and client): the connection may well end there."""
    if isinstance(address, ipaddress.IPv4Address):
        return
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    translated = address in _SIIT or any(address in net for net in _NAT64)
    if translated or (address in _COMPATIBLE and int(address) > 1):  # not :: or ::1
        yield low
    if address.sixtofour is not None:
        yield address.sixtofour
    if address.teredo is not None:
        yield from address.teredo


def _canonical(host: str) -> bool:
    """Whether the HTTP client calls a literal address as written: it refuses digits and dots
    that are not four decimal parts without leading zeros (`2130706433`, `127.1`, `0177.0.0.1`)
    and hands other spellings (`0x7f.1`) to the resolver, which the guard watches."""
    if not _looks_numeric(host) or ":" in host:
        return True
    try:
        return str(ipaddress.IPv4Address(host)) == host
    except ValueError:
        return False


def _host(host: str) -> str:
    return host.lower().rstrip(".") if not _looks_numeric(host) else host.lower()


class OutboundGuard:
    def __init__(
        self,
        allow: Sequence[str],
        deny: Sequence[str],
        *,
        policy: Policy = "private-allowed",
        trusted: tuple[str, int] | None = None,
    ) -> None:
        self._allow = [parse_entry(entry) for entry in allow]
        self._deny = [parse_entry(entry) for entry in deny]
        self.policy = policy
        # (host, port) the bridge is configured to call: BRIDGE_N8N_URL's
        self._trusted = trusted
        # The verdict depends on the host and port alone, and a bridge calls few: judge once.
        self._judged = functools.lru_cache(maxsize=1024)(self._judge_host)

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundGuard:
        trusted = None
        if settings.n8n_url:
            url = URL(settings.n8n_url)
            if url.raw_host and url.port:
                address = literal_address(url.raw_host)
                trusted = (str(address) if address else _host(url.raw_host), url.port)
        return cls(
            settings.outbound_allow,
            settings.outbound_deny,
            policy=settings.outbound_policy,
            trusted=trusted,
        )

    def describe(self) -> str:
        """One line for the start-up log: the policy in force."""
        if self.policy == "private-denied":
            rule = (
                "loopback, private and link-local addresses are refused unless "
                "BRIDGE_OUTBOUND_ALLOW lists them"
            )
        else:
            rule = "loopback and private addresses may be called"
        allow = f"only {len(self._allow)} BRIDGE_OUTBOUND_ALLOW entries" if self._allow else ""
        n8n = f"; n8n at {self._trusted[0]}:{self._trusted[1]} allowed" if self._trusted else ""
        return (
            f"outbound policy: {self.policy} ({rule}; {len(self._deny)} BRIDGE_OUTBOUND_DENY "
            f"entries refused always{'; ' + allow if allow else ''}{n8n})"
        )

    def refusal(self, url: str) -> str | None:
        """Why a URL may not be called, judged by its host and port alone (no DNS); None if
        it may. The URL is parsed as the HTTP client parses it (IDNA mapping included)."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError, UnicodeError):
            return "it is not a valid URL"
        if parsed.scheme not in ("http", "https"):
            return "only http and https URLs are called"
        if not parsed.raw_host:
            return "it has no host"
        return self._judged(parsed.raw_host, parsed.port or 0)

    def _judge_host(self, host: str, port: int) -> str | None:
        address = literal_address(host)
        if address is not None:
            reason = self._judge(_host(host), port, address)
            if reason is None and not _canonical(host):
                # aiohttp refuses it itself ("not a canonical IPv4 address"), later.
                return f"{host} is {address} not written in standard form (a.b.c.d)"
            if reason is None or _host(host) == str(address):
                return reason
            return f"{host} is {address}: {reason}"  # an address written otherwise
        if _looks_numeric(host):
            # The client would hand this to the system's resolver as if it were an address:
            # what it reaches could not be judged.
            return f"{host} is neither an address nor a host name"
        name = _host(host)
        if self._matches_name(self._deny, name):
            return f"{name} is refused by BRIDGE_OUTBOUND_DENY"
        if self.policy == "private-denied":
            return self._judge_local_name(name, port)
        # What a name reaches is judged when it is resolved.
        return None

    def _judge_local_name(self, name: str, port: int) -> str | None:
        """Under private-denied: a name that is loopback or local by definition is refused
        unless allowed (by name, as BRIDGE_N8N_URL's host and port, or — loopback names — as
        127.0.0.1 or ::1). Any other name is judged when it is resolved."""
        kind = local_name(name)
        if kind is None or self._matches_name(self._allow, name):
            return None
        trusted = self._trusted
        if trusted is not None and (name, port) == trusted:
            return None
        if kind == "loopback":
            # Refused when no loopback address may be called; else judged as resolved.
            reasons = [self._judge(name, port, address) for address in _LOOPBACK]
            if None in reasons:
                return None
            return f"{name} is loopback ({_LOOPBACK[0]}): {reasons[0]}"
        return (
            f"{name} is a name of a local network, refused by BRIDGE_OUTBOUND_POLICY="
            "private-denied (BRIDGE_OUTBOUND_ALLOW may name it)"
        )

    def check_resolved(self, host: str, port: int, addresses: Sequence[str]) -> None:
        """Raise OutboundRefused unless every address `host` resolved to may be called."""
        name = _host(host)
        for text in addresses:
            address = literal_address(text)
            if address is None:
                raise OutboundRefused(f"{name} resolves to {text!r}, which is not an address")
            reason = self._judge(name, port, address)
            if reason is not None:
                raise OutboundRefused(f"{name} resolves to {address}: {reason}")

    def _judge(self, host: str, port: int, address: Address) -> str | None:
        """Why `address` (reached as `host`:`port`) may not be called; None if it may."""
        views = [address, *carried(address)]

        def shown(view: Address) -> str:
            return str(view) if view == address else f"{address} carries {view}, which"

        for view in views:
            if self._matches_net(self._deny, view):
                return (
                    f"{shown(view)} is refused by BRIDGE_OUTBOUND_DENY (by default: link-local, "
                    "cloud metadata, unspecified and multicast addresses)"
                )
        trusted = self._trusted
        if trusted is not None and port == trusted[1] and trusted[0] in (host, str(address)):
            return None  # BRIDGE_N8N_URL's host and port
        if self._matches_name(self._allow, host):
            return None
        judged = views[1:] or views  # an IPv6 form that carries IPv4 is judged by what it carries
        if self._allow and not all(self._matches_net(self._allow, view) for view in judged):
            return "BRIDGE_OUTBOUND_ALLOW does not list it"
        if self.policy == "private-denied":
            for view in views:
                if not is_global(view) and not self._matches_net(self._allow, view):
                    return (
                        f"{shown(view)} is not a globally reachable address (loopback, private "
                        "or special-purpose), refused by BRIDGE_OUTBOUND_POLICY=private-denied "
                        "(BRIDGE_OUTBOUND_ALLOW may list it)"
                    )
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
        """Every outgoing request, redirects included, by its host and port; a name's addresses
        are judged by the resolver."""
        host = request.url.raw_host or ""
        reason = self._judged(host, request.url.port or 0) if host else "it has no host"
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
        self._guard.check_resolved(host, port, [result["host"] for result in results])
        return results

    async def close(self) -> None:
        await self._resolver.close()
