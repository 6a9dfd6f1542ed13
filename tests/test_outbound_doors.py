"""Every door out of the bridge, and its guard: outbound HTTP goes through the one guarded client
(bridge/http_client.py), and the other connections the bridge opens go only where its settings
say. The scan of bridge/ fails when code opens a connection any other way, so a new door cannot
open unseen; docs/security.md ("Outbound requests: every door and its guard") lists the same."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from referencing.exceptions import Unresolvable

from bridge import processor
from bridge.processors.email_send import EmailParams
from bridge.processors.registry import specs_in
from tests.canary import Canary

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"

# Calls that open connections (or build what does), and the only modules that may make them.
ALLOWED_CALLS: dict[str, dict[str, str]] = {
    "aiohttp.ClientSession": {"http_client.py": "the one guarded session"},
    "aiohttp.TCPConnector": {"http_client.py": "the guarded session's connector"},
    "aiohttp.UnixConnector": {},
    "aiohttp.request": {},
    "aiosmtplib.SMTP": {"smtp.py": "BRIDGE_SMTP_HOST and port only"},
    "aiosmtplib.send": {},
    "redis.asyncio.Redis": {"stores/redis_db.py": "BRIDGE_REDIS_URL only"},
    "redis.asyncio.from_url": {},
    "redis.Redis": {},
    "socket.getaddrinfo": {
        "outbound.py": "AI_NUMERICHOST: parses a literal address, never a DNS query"
    },
    "socket.socket": {},
    "socket.create_connection": {},
    "socket.gethostbyname": {},
    "socket.gethostbyname_ex": {},
    "asyncio.open_connection": {},
    "asyncio.open_unix_connection": {},
    "jsonschema.RefResolver": {},  # fetches remote $ref with urllib, unguarded
}
# Methods (on a loop, a socket...) that connect or resolve, whatever the object.
CONNECTING_METHODS = frozenset(
    {
        "create_connection",
        "create_unix_connection",
        "open_connection",
        "create_datagram_endpoint",
        "sock_connect",
        "getaddrinfo",
    }
)
# Modules whose only use is to open connections of their own: never imported.
FORBIDDEN_MODULES = (
    "urllib.request",
    "http.client",
    "requests",
    "httpx",
    "urllib3",
    "smtplib",
    "ftplib",
    "poplib",
    "imaplib",
    "telnetlib",
    "xmlrpc",
    "websockets",
)
# Libraries that can reach the network through an option or a feature, where they may be used
# and what keeps them in: docs/security.md says the same per door.
LIBRARY_DOORS: dict[str, dict[str, str]] = {
    "jsonschema": {
        "processors/json_schemas.py": "request schemas: a registry that refuses retrieval",
        "processors/registry.py": "processors' own schemas: a registry without retrieval",
        "processors/validation.py": "request schemas: no remote $ref (refused at validation)",
    },
    "email_validator": {
        "processors/email_headers.py": "check_deliverability=False: no DNS",
        "processors/email_send.py": "check_deliverability=False: no DNS",
        "processors/validation.py": "DNS only when asked, bounded",
    },
    "dns": {
        "processors/email_dns.py": "deliverability queries to the configured resolvers, "
        "each bounded by BRIDGE_EMAIL_DNS_TIMEOUT_S and the run's deadline",
    },
    "jinja2": {
        "processors/template_render.py": "filesystem or in-memory loaders only",
        "processors/template_sandbox.py": "the sandboxed environment: no loader of its own",
        "processors/template_limits.py": "its sandbox's helpers only",
        "processors/template_filters.py": "its filters only",
        "console/render.py": "the console's own templates, from the package",
    },
    "aiosmtplib": {
        "smtp.py": "BRIDGE_SMTP_HOST only",
        "processors/email_send.py": "its exception classes only",
    },
    "redis": {
        "settings.py": "its URL parser only: BRIDGE_REDIS_URL's form, checked at load",
        "stores/redis_db.py": "BRIDGE_REDIS_URL only",
        "stores/redis_log.py": "its exception classes only",
        "stores/redis_backfill.py": "its script and exception classes; the connection of "
        "stores/redis_db.py",
        "queues/redis_streams.py": "its exception classes only",
    },
}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(BRIDGE.rglob("*.py")):
        yield path.relative_to(BRIDGE).as_posix(), ast.parse(path.read_text(), str(path))


def aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.asname:
                    found[name.asname] = name.name
                else:
                    found[name.name.split(".")[0]] = name.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for name in node.names:
                found[name.asname or name.name] = f"{node.module}.{name.name}"
    return found


def dotted(node: ast.expr, names: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    return ".".join([names[node.id], *reversed(parts)])


def imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (name.name for name in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{name.name}" for name in node.names)


def test_nothing_in_bridge_opens_a_connection_but_through_its_door() -> None:
    problems = []
    for where, tree in modules():
        names = aliases(tree)
        for module in imported(tree):
            if module.startswith(FORBIDDEN_MODULES):
                problems.append(f"{where} imports {module}")
            library = module.split(".")[0]
            if library in LIBRARY_DOORS and where not in LIBRARY_DOORS[library]:
                problems.append(f"{where} uses {library}: add its door to LIBRARY_DOORS")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = dotted(node.func, names) or ""
            door = next((c for c in ALLOWED_CALLS if name == c or name.startswith(c + ".")), None)
            if door is not None:
                if where not in ALLOWED_CALLS[door]:
                    problems.append(f"{where}:{node.lineno} calls {name}")
            elif isinstance(node.func, ast.Attribute) and node.func.attr in CONNECTING_METHODS:
                problems.append(f"{where}:{node.lineno} calls .{node.func.attr}()")
    assert problems == []


def test_the_scan_sees_a_second_door(tmp_path: Path) -> None:
    """The scan would notice the doors it is for."""
    code = (
        "import aiohttp\nimport redis.asyncio as r\nfrom urllib.request import urlopen\n"
        "s = aiohttp.ClientSession()\nc = r.Redis.from_url('redis://x')\n"
        "async def f(loop):\n    await loop.create_connection(None, 'h', 1)\n"
    )
    tree = ast.parse(code)
    names = aliases(tree)
    calls = [dotted(n.func, names) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert "aiohttp.ClientSession" in calls and "redis.asyncio.Redis.from_url" in calls
    assert "urllib.request.urlopen" in set(imported(tree))


def test_no_timeout_is_ever_switched_off() -> None:
    """Every request has a total timeout: the session's (BRIDGE_CALLBACK_TIMEOUT_S) or the
    caller's (BRIDGE_N8N_TIMEOUT_S); nothing passes `timeout=None` or a ClientTimeout without a
    total."""
    problems = []
    for where, tree in modules():
        names = aliases(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            given = {k.arg: k.value for k in node.keywords}
            timeout = given.get("timeout")
            if isinstance(timeout, ast.Constant) and timeout.value is None:
                problems.append(f"{where}:{node.lineno} timeout=None")
            total = given.get("total")
            if dotted(node.func, names) == "aiohttp.ClientTimeout" and (
                total is None or (isinstance(total, ast.Constant) and total.value is None)
            ):
                problems.append(f"{where}:{node.lineno} ClientTimeout without a total")
    assert problems == []


def test_email_parameters_cannot_name_a_server() -> None:
    """The SMTP door: where mail goes is the operator's (BRIDGE_SMTP_HOST), never a request's."""
    fields = {name.lower() for name in EmailParams.model_fields}
    assert not fields & {"host", "hostname", "server", "port", "smtp_host", "url"}


async def test_a_processor_schema_with_a_remote_ref_fetches_nothing(canary: Canary) -> None:
    """The jsonschema door in the registry: a processor's own JSON Schema is resolved without
    retrieval, so a `$ref` to a URL is an error, not a GET."""

    @processor("remote_ref", params={"type": "object", "properties": {"a": {"$ref": canary.url()}}})
    def remote_ref(item, params, ctx):  # type: ignore[no-untyped-def]
        return None

    (spec,) = specs_in(remote_ref)
    with pytest.raises(Unresolvable):  # the processor's fault: a 500, not a fetch
        await asyncio.to_thread(spec.parse_params, {"a": 1})
    assert canary.connections == 0
