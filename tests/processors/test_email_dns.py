"""`validation`'s deliverability checks ask DNS from a worker thread: each query is bounded by
BRIDGE_EMAIL_DNS_TIMEOUT_S and by the run's deadline. A real UDP socket on loopback that never
answers (a tarpit resolver) shows it, with no internet needed."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient

from bridge.settings import Settings
from tests.conftest import ClientFactory, pool_calls_end

EXECUTE = "/api/v1/workflow/execute"


@pytest.fixture
def silent_resolver() -> Iterator[tuple[str, int]]:
    """A UDP socket that takes every DNS query and answers none."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()
    sock.close()


def deliverability(items: int, timeout_s: float) -> dict[str, object]:
    return {
        "processing_type": "validation",
        "items": [{"json": {"email": f"user@tarpit-{i}.example"}} for i in range(items)],
        "parameters": {"email_fields": ["email"], "check_deliverability": True},
        "timeout_s": timeout_s,
    }


async def test_each_dns_query_is_bounded_by_the_setting(
    make_client: ClientFactory, auth: dict[str, str], silent_resolver: tuple[str, int]
) -> None:
    """A domain whose resolver never answers costs at most its queries' bound, and the address
    comes back unmarked (deliverability unknown) rather than failing the request."""
    host, port = silent_resolver
    client: TestClient = await make_client(
        email_dns_servers=[f"{host}:{port}"], email_dns_timeout_s=0.3
    )
    started = time.monotonic()
    response = await client.post(EXECUTE, json=deliverability(1, 20), headers=auth)
    elapsed = time.monotonic() - started
    assert response.status == 200, await response.text()
    assert (await response.json())["items"][0]["json"]["validation"]["valid"] is True
    # MX, then A, AAAA and TXT at worst: four queries of 0.3 s, far below dnspython's 5 s each.
    assert elapsed < 4, f"{elapsed:.1f} s for one tarpit domain"


async def test_dns_queries_end_at_the_run_deadline(
    make_client: ClientFactory, auth: dict[str, str], silent_resolver: tuple[str, int]
) -> None:
    """Many tarpit domains: the thread stops at the deadline, not after every query's bound."""
    host, port = silent_resolver
    client = await make_client(email_dns_servers=[f"{host}:{port}"], email_dns_timeout_s=10)
    response = await client.post(EXECUTE, json=deliverability(50, 1), headers=auth)
    assert response.status == 504
    assert await pool_calls_end(client, bound_s=3), "a DNS query held the thread past the deadline"


def test_dns_servers_are_addresses_with_an_optional_port() -> None:
    servers = "127.0.0.1, 127.0.0.1:5353, ::1, [::1]:5353"
    settings = Settings.model_validate({"email_dns_servers": servers})
    assert settings.email_dns_servers == ("127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353")


@pytest.mark.parametrize("servers", ["dns.example", "127.0.0.1:0", "127.0.0.1:99999", "[::1]:x"])
def test_bad_dns_servers_stop_start_up(servers: str) -> None:
    with pytest.raises(ValueError, match="DNS server"):
        Settings.model_validate({"email_dns_servers": servers})
