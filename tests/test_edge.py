"""The HTTP edge against a real daemon, over raw sockets: malformed requests get the shared JSON
error body and one warning line that carries no header value; slow clients are cut off; no answer
names the server software."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.api.edge import LOG_LINES_PER_MINUTE
from bridge.auth import mint_token
from bridge.settings import Settings
from tests.conftest import PLUGINS, SECRET
from tests.daemon import Daemon

pytestmark = pytest.mark.slow

LEAK = "tok-LEAKED-0123456789abcdef"  # a credential that must never reach a log line
EDGE_LOGGER = "bridge.api.edge"
ERROR_KEYS = {"code", "message", "description", "http_code", "retryable", "trace_id", "details"}
S = LEAK.encode()

# Every class of parser error, each carrying the credential where aiohttp would have quoted it.
MALFORMED: dict[str, list[bytes]] = {
    "a control character after a bearer token": [
        b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + S + b"\x01\r\n\r\n"
    ],
    "DEL after an API key": [
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-API-Key: " + S + b"\x7f\r\n\r\n"
    ],
    "a control character in a header name": [
        b"GET /health HTTP/1.1\r\nAuth\x01orization: Bearer " + S + b"\r\n\r\n"
    ],
    "a bad method": [b"G(T /health?k=" + S + b" HTTP/1.1\r\nHost: x\r\n\r\n"],
    "a bad version": [b"GET /health?k=" + S + b" HTTP/9.Z\r\nHost: x\r\n\r\n"],
    "a request line too long": [b"GET /" + S + b"A" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"],
    "a header too long": [
        b"GET /health HTTP/1.1\r\nAuthorization: Bearer " + S + b"A" * 9000 + b"\r\n\r\n"
    ],
    "too many headers": [
        b"GET /health HTTP/1.1\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, S) for i in range(200))
        + b"\r\n"
    ],
    "a bad Content-Length": [
        b"POST /health HTTP/1.1\r\nX-API-Key: " + S + b"\r\nContent-Length: 1x\r\n\r\n"
    ],
    "two Content-Lengths": [
        b"POST /health HTTP/1.1\r\nX-API-Key: " + S + b"\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab"
    ],
    "Content-Length with chunked": [
        b"POST /health HTTP/1.1\r\nX-API-Key: " + S + b"\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ],
    "a bad chunk size": [
        b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"
        + S
        + b"\r\n"
    ],
    "a NUL in the URL": [b"GET /hea\x00lth?k=" + S + b" HTTP/1.1\r\nHost: x\r\n\r\n"],
    "a folded header": [b"GET /health HTTP/1.1\r\nX-A: a\r\n  " + S + b"\r\n\r\n"],
    "TLS on the HTTP port": [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + S + b"\r\n\r\n"],
    "HTTP/2 preface": [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + S],
}


def daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_JWT_SECRET": SECRET,
        "BRIDGE_PROCESSORS": PLUGINS,
        "BRIDGE_CPU_EXECUTOR": "thread",
        **extra,
    }


def address(daemon: Daemon) -> tuple[str, int]:
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


async def exchange(daemon: Daemon, parts: list[bytes], pause_s: float = 0.2) -> bytes:
    """Send `parts` (a pause between them), then read until the bridge closes the connection."""
    reader, writer = await asyncio.open_connection(*address(daemon))
    try:
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(pause_s)
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, orjson.loads(body)


def assert_json_error(raw: bytes, status: int) -> dict[str, Any]:
    got, headers, body = parse_answer(raw)
    assert got == status, raw
    assert "server" not in headers, raw
    assert headers["content-type"].startswith("application/json")
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["http_code"] == status
    assert body["error"]["trace_id"] == headers["x-trace-id"]
    error: dict[str, Any] = body["error"]
    return error


def edge_lines(daemon: Daemon) -> list[dict[str, Any]]:
    return [r for r in daemon.records() if r["logger"] == EDGE_LOGGER]


async def logged(daemon: Daemon, count: int, bound_s: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + bound_s
    while len(edge_lines(daemon)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # and nothing more comes
    return edge_lines(daemon)


async def test_parser_errors_answer_json_and_log_one_line_without_secrets(tmp_path: Path) -> None:
    assert len(MALFORMED) <= LOG_LINES_PER_MINUTE
    async with Daemon(daemon_env(tmp_path)) as daemon:
        for case, parts in MALFORMED.items():
            raw = await exchange(daemon, parts)
            error = assert_json_error(raw, 400)
            assert error["code"] == "validation", case
            assert LEAK not in raw.decode("latin-1"), case
        lines = await logged(daemon, len(MALFORMED))
        assert len(lines) == len(MALFORMED)
        assert all(line["level"] == "warning" and "exc" not in line for line in lines)
        assert all(LEAK not in line for line in daemon.lines)
        assert not [r for r in daemon.records() if r["level"] in ("error", "critical")]
        assert all("Traceback" not in line for line in daemon.lines)
        async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/health") as ok:
            assert ok.status == 200


# A body that breaks while a handler reads it: the handler answers, through its reader.
BROKEN_BODIES = {
    "a bad chunk": (b"Transfer-Encoding: chunked", b'5\r\n{"a":\r\nZZ\r\n' + S + b"\r\n"),
    "gzip that is not": (b"Content-Encoding: gzip\r\nContent-Length: 40", S + b"!" * 13),
    "deflate that is not": (b"Content-Encoding: deflate\r\nContent-Length: 40", S + b"!" * 13),
}


@pytest.mark.parametrize("case", BROKEN_BODIES)
async def test_a_body_that_breaks_while_read_is_400_json(tmp_path: Path, case: str) -> None:
    token = mint_token(Settings(jwt_secret=SECRET), ["execute"], 300)
    framing, body = BROKEN_BODIES[case]
    head = (
        b"POST /api/v1/workflow/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\nContent-Type: application/json\r\n"
        + framing
        + b"\r\n\r\n"
    )
    async with Daemon(daemon_env(tmp_path)) as daemon:
        for parts in ([head, body], [head + body]):  # the body apart from its head, and with it
            raw = await exchange(daemon, parts)
            assert "malformed request" in assert_json_error(raw, 400)["message"]
        await logged(daemon, 2)
        assert all(LEAK not in line and token not in line for line in daemon.lines)
        assert not [r for r in daemon.records() if r["level"] in ("error", "critical")]
        assert all("Traceback" not in line for line in daemon.lines)


async def test_parser_error_lines_are_rate_limited_with_a_count(tmp_path: Path) -> None:
    bad = [b"GET /health HTTP/1.1\r\nAuthorization: Bearer " + S + b"\x01\r\n\r\n"]
    assert LOG_LINES_PER_MINUTE == 20  # docs/security.md: a burst of 20, then one every 3 s
    async with Daemon(daemon_env(tmp_path)) as daemon:
        sent = LOG_LINES_PER_MINUTE + 15
        for _ in range(sent):
            assert_json_error(await exchange(daemon, bad), 400)
        burst = len(await logged(daemon, LOG_LINES_PER_MINUTE))
        # the burst, and the odd line refilled while sending on a loaded machine
        assert LOG_LINES_PER_MINUTE <= burst <= LOG_LINES_PER_MINUTE + 3
        await asyncio.sleep(60 / LOG_LINES_PER_MINUTE + 0.5)  # one line's worth comes back
        assert_json_error(await exchange(daemon, bad), 400)
        lines = await logged(daemon, burst + 1)
        assert len(lines) == burst + 1
        assert lines[-1]["suppressed"] == sent - burst
        assert f"{sent - burst} more like it" in lines[-1]["msg"]


async def test_no_answer_names_the_server_software(tmp_path: Path) -> None:
    async with Daemon(daemon_env(tmp_path)) as daemon, aiohttp.ClientSession() as session:
        for method, path in [
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("GET", "/api/v1/openapi.json"),
            ("GET", "/nowhere"),  # 404
            ("PUT", "/health"),  # 405
            ("GET", "/api/v1/processors"),  # 401
            ("GET", "/admin/ui/"),
        ]:
            async with session.request(method, daemon.url + path) as response:
                assert "Server" not in response.headers, (method, path, response.status)


# --- slow clients ---------------------------------------------------------------------------


async def trickle(daemon: Daemon, head: bytes, every_s: float) -> float:
    """Send `head` one byte every `every_s` seconds; the seconds until the bridge closed the
    connection (by EOF or reset while writing)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(*address(daemon))
    closed = asyncio.create_task(reader.read())
    try:
        for byte in head:
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                break
            done, _ = await asyncio.wait({closed}, timeout=every_s)
            if done:
                break
        await asyncio.wait_for(closed, 30)
        return time.monotonic() - started
    except ConnectionError:
        return time.monotonic() - started
    finally:
        closed.cancel()
        writer.close()


async def served_meanwhile(daemon: Daemon, seconds: float) -> list[float]:
    """The latencies of ordinary requests sent one after another for `seconds`."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            async with session.get(f"{daemon.url}/health") as response:
                assert response.status == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.2)
    return latencies


async def test_200_trickling_headers_are_closed_and_others_are_served(tmp_path: Path) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    env = daemon_env(tmp_path, BRIDGE_HEADER_TIMEOUT_S="2")
    async with Daemon(env) as daemon:
        trickling = [asyncio.create_task(trickle(daemon, head, 1.0)) for _ in range(200)]
        latencies = await served_meanwhile(daemon, 3)
        closed_after = await asyncio.wait_for(asyncio.gather(*trickling), 60)
        assert latencies and max(latencies) < 5, latencies
        assert all(1.5 < seconds < 15 for seconds in closed_after), sorted(closed_after)
        lines = await logged(daemon, LOG_LINES_PER_MINUTE)
        assert 1 <= len(lines) <= LOG_LINES_PER_MINUTE  # rate-limited: not one per socket
        assert "request head" in lines[0]["msg"]


async def test_a_trickled_body_is_cut_off_with_408(tmp_path: Path) -> None:
    token = mint_token(Settings(jwt_secret=SECRET), ["execute"], 300)
    body = orjson.dumps({"processing_type": "echo", "items": [{"json": {"x": "y" * 50}}]})
    head = (
        b"POST /api/v1/workflow/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    env = daemon_env(tmp_path, BRIDGE_BODY_TIMEOUT_S="2")
    async with Daemon(env) as daemon:
        reader, writer = await asyncio.open_connection(*address(daemon))
        started = time.monotonic()
        writer.write(head)
        answer = asyncio.create_task(reader.read())
        for byte in body:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.5)
        raw = await asyncio.wait_for(answer, 30)
        elapsed = time.monotonic() - started
        writer.close()
        error = assert_json_error(raw, 408)
        assert "BRIDGE_BODY_TIMEOUT_S" in error["message"]
        assert 1.5 < elapsed < 15
        assert not [r for r in daemon.records() if r["level"] in ("error", "critical")]


async def test_idle_connections_are_closed_after_the_keepalive_timeout(tmp_path: Path) -> None:
    env = daemon_env(tmp_path, BRIDGE_KEEPALIVE_TIMEOUT_S="2")
    async with Daemon(env) as daemon:
        # one that never says anything, one idle after an answer
        silent = asyncio.create_task(idle_for(daemon, b""))
        after_answer = asyncio.create_task(
            idle_for(daemon, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        )
        for seconds in await asyncio.wait_for(asyncio.gather(silent, after_answer), 30):
            assert 1.5 < seconds < 15


async def idle_for(daemon: Daemon, request: bytes) -> float:
    reader, writer = await asyncio.open_connection(*address(daemon))
    started = time.monotonic()
    writer.write(request)
    async for _ in line_chunks(reader):
        pass
    writer.close()
    return time.monotonic() - started


async def line_chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(65536):
        yield chunk


async def test_a_client_gone_mid_body_is_no_error(tmp_path: Path) -> None:
    token = mint_token(Settings(jwt_secret=SECRET), ["execute"], 300)
    head = (
        b"POST /api/v1/workflow/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token.encode()
        + b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"items": ['
    )
    async with Daemon(daemon_env(tmp_path)) as daemon:
        for _ in range(3):
            _, writer = await asyncio.open_connection(*address(daemon))
            writer.write(head)
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.close()
        await asyncio.sleep(1)
        assert not [r for r in daemon.records() if r["level"] in ("error", "critical")]
        assert all("Traceback" not in line for line in daemon.lines)
