"""Events cost bounded memory, whatever callers send and however slowly streams are read: a real
daemon's VmRSS, with an event stream that is never read while reports arrive (each backend).

Before the guards, one never-reading stream and 30 reports of 15 MB raised RSS by ~630 MB, kept
after the client closed: a report's size had no bound but the body's (16 MiB), and a stream's
buffer held up to 1000 events whatever their size, until its client went away.
"""

from __future__ import annotations

import asyncio
import io
import socket
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.daemon import Daemon

API_KEY = "events-memory-api-key-0123456789"
HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
REPORT_LIMIT = 64 * 1024  # BRIDGE_MAX_REPORT_BYTES's default
# RSS growth allowed: a stream's 1 MiB buffer, caches, allocator slack. Redis costs more with no
# stream at all (+80 MB measured for the same 300 reports: its write batches, not the streams).
BOUND_MB = {"embedded": 48, "redis": 112}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _never_reading_stream(url: str) -> socket.socket:
    """A raw event-stream request whose client never reads a byte of the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little for it
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n\r\n".encode()
    )
    return sock


def _closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server ended the connection (reading, now, whatever it had sent)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


async def _report(session: aiohttp.ClientSession, url: str, data: object) -> int:
    body = orjson.dumps({"status": "completed", "data": data})
    async with session.post(
        f"{url}/api/v1/callbacks/wf-a", data=io.BytesIO(body), headers=HEADERS
    ) as answer:
        await answer.read()
        return answer.status


async def test_a_never_reading_stream_and_maximal_reports_cost_bounded_memory(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_JWT_SECRET": "a-test-secret-that-is-long-enough-0123456789",
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_ACCESS_LOG": "false",
    }
    if backend == "redis":
        env["BRIDGE_REDIS_URL"] = request.getfixturevalue("redis_url")
    async with Daemon(env) as daemon, aiohttp.ClientSession() as session:
        assert daemon.process is not None
        pid = daemon.process.pid
        for _ in range(20):  # first-use costs (imports, caches, the log's pages) are not the test's
            assert await _report(session, daemon.url, "w" * (REPORT_LIMIT - 100)) == 200
        before = _rss_mb(pid)
        stream = _never_reading_stream(daemon.url)
        try:
            await asyncio.sleep(0.5)  # the stream's listener is in
            # 15 MB reports, as the attacker sent: refused, none stored or published.
            huge = [await _report(session, daemon.url, "x" * 15_000_000) for _ in range(10)]
            # Maximal reports, 300 of them (~19 MB of events): taken, and the stream that reads
            # none of them falls behind, is ended and lets its buffer go.
            for n in range(300):
                assert (
                    await _report(session, daemon.url, f"{n:04d}" * (REPORT_LIMIT // 4 - 50)) == 200
                )
            during = _rss_mb(pid)
            closed = await asyncio.to_thread(_closed_by_server, stream, 20)
        finally:
            stream.close()
        await asyncio.sleep(1)
        after = _rss_mb(pid)
        print(
            f"\n{backend}: VmRSS {before:.0f} MB, +{during - before:.0f} with the stream, "
            f"+{after - before:.0f} after it closed"
        )
        assert during - before < BOUND_MB[backend]
        assert huge == [413] * 10
        assert closed, "the stream that fell behind was not ended"
        assert after - before < BOUND_MB[backend]
