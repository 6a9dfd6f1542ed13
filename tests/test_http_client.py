"""The one HTTP client, against real loopback servers that answer badly: remote text (bodies,
reason phrases, malformed status lines) never reaches an error, a callback's `last_error`, a
dead letter or a log; answers are read up to BRIDGE_OUTBOUND_MAX_RESPONSE_BYTES, in chunks (a
200 MB answer, or a gzip bomb, is not held); every call ends within its timeout; no cookie or
proxy from one call reaches another."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.settings import Settings
from tests.canary import Canary, RawHandler, RawServer
from tests.conftest import ClientFactory
from tests.processors.test_n8n_trigger import trigger
from tests.test_admin import dead_letters
from tests.test_worker import after_callback, job
from tests.webhook_target import Target

embedded_only = pytest.mark.parametrize("backend", ["embedded"])  # no backend part in it

EXECUTE = "/api/v1/workflow/execute"
SECRET = "SECRET-FROM-THE-TARGET"
StartRaw = Callable[[RawHandler], Awaitable[RawServer]]


def answer(status_line: str, body: bytes = b"", **headers: str) -> RawHandler:
    """A handler that writes one fixed answer."""

    async def handle(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        length = f"Content-Length: {len(body)}\r\n" if status_line.startswith("HTTP/") else ""
        head = f"{status_line}\r\n{length}{head}Connection: close\r\n\r\n"
        await server.write(writer, head.encode() + body)

    return handle


HOSTILE_ANSWERS = {
    "a 400 with a body": answer("HTTP/1.1 400 Bad Request", SECRET.encode()),
    "a 404 with a JSON message": answer(
        "HTTP/1.1 404 Not Found",
        f'{{"message": "{SECRET}"}}'.encode(),
        Content_Type="application/json",
    ),
    "a 422 with its own reason phrase": answer(f"HTTP/1.1 422 {SECRET}", SECRET.encode()),
    "a 500 with a body": answer("HTTP/1.1 500 Oops", SECRET.encode()),
    "a malformed status line": answer(f"{SECRET} 200"),
    "a malformed header": answer("HTTP/1.1 200 OK", b"", **{f"X-{SECRET}\x01": SECRET}),
}


@embedded_only
@pytest.mark.parametrize("name", list(HOSTILE_ANSWERS))
async def test_n8n_trigger_errors_never_quote_the_target(
    make_client: ClientFactory,
    auth: dict[str, str],
    raw_server: StartRaw,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    server = await raw_server(HOSTILE_ANSWERS[name])
    client = await make_client(n8n_max_attempts=2, retry_base_s=0.01)
    with caplog.at_level(logging.DEBUG, logger="bridge"):
        response = await client.post(EXECUTE, json=trigger(server.url(), [{}]), headers=auth)
        text = await response.text()
    assert "HTTP" in text or "valid HTTP" in text, text
    assert SECRET not in text
    assert SECRET not in caplog.text


@embedded_only
@pytest.mark.parametrize("name", list(HOSTILE_ANSWERS))
async def test_callback_failures_never_quote_the_target(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    raw_server: StartRaw,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    server = await raw_server(HOSTILE_ANSWERS[name])
    client = await make_client(callback_max_attempts=2, retry_base_s=0.01)
    with caplog.at_level(logging.DEBUG, logger="bridge"):
        accepted = await (
            await client.post(EXECUTE, json=job("echo", callback_url=server.url()), headers=auth)
        ).json()
        done = await after_callback(client, auth, accepted["job_id"], "failed")
        [letter] = await dead_letters(client, settings, 1)
    assert done["callback"]["state"] == "failed"
    assert done["callback"]["last_error"]
    assert SECRET not in str(done) and SECRET not in str(letter)
    assert SECRET not in caplog.text


def endless(chunk: bytes, gzipped: bool = False) -> RawHandler:
    """200 MB (or more, if the reader keeps reading) of `chunk`, chunked, without a length."""

    async def handle(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        encoding = "Content-Encoding: gzip\r\n" if gzipped else ""
        await server.write(
            writer,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            + encoding.encode()
            + b"Content-Type: application/octet-stream\r\n\r\n",
        )
        for _ in range(200 * 1024 * 1024 // len(chunk) if not gzipped else 1):
            await server.write(writer, b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await server.write(writer, b"0\r\n\r\n")

    return handle


async def bounded_call(
    client: TestClient, auth: dict[str, str], server: RawServer
) -> tuple[dict[str, Any], int]:
    """The answer of one n8n_trigger call to `server`, and the peak of memory allocated meanwhile."""
    tracemalloc.start()
    try:
        response = await client.post(EXECUTE, json=trigger(server.url(), [{}]), headers=auth)
        body = await response.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return body, peak


@embedded_only
async def test_a_200_mb_answer_is_cut_off_not_held(
    client: TestClient, auth: dict[str, str], raw_server: StartRaw
) -> None:
    server = await raw_server(endless(b"x" * 65536))
    body, peak = await bounded_call(client, auth, server)
    [error] = body["errors"]
    assert "BRIDGE_OUTBOUND_MAX_RESPONSE_BYTES (1048576 bytes)" in error["message"]
    assert server.sent < 64 * 1024 * 1024  # the bridge stopped reading long before the end
    assert peak < 48 * 1024 * 1024, peak


@embedded_only
async def test_a_gzip_bomb_is_cut_off_not_inflated(
    client: TestClient, auth: dict[str, str], raw_server: StartRaw
) -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    server = await raw_server(endless(bomb, gzipped=True))
    body, peak = await bounded_call(client, auth, server)
    [error] = body["errors"]
    assert "BRIDGE_OUTBOUND_MAX_RESPONSE_BYTES" in error["message"]
    assert peak < 48 * 1024 * 1024, peak


@embedded_only
async def test_an_answer_within_the_limit_is_returned_and_the_limit_is_a_setting(
    make_client: ClientFactory, auth: dict[str, str], raw_server: StartRaw, tmp_path: Path
) -> None:
    server = await raw_server(
        answer(
            "HTTP/1.1 200 OK", b'{"big": "' + b"y" * 3000 + b'"}', Content_Type="application/json"
        )
    )
    client = await make_client()
    body = await (await client.post(EXECUTE, json=trigger(server.url(), [{}]), headers=auth)).json()
    assert len(body["items"][0]["json"]["n8n"]["response"]["big"]) == 3000
    # A second bridge beside the first: a data directory of its own (one writer per directory)
    small = await make_client(outbound_max_response_bytes=2048, data_dir=tmp_path / "small")
    body = await (await small.post(EXECUTE, json=trigger(server.url(), [{}]), headers=auth)).json()
    assert "(2048 bytes)" in body["errors"][0]["message"]


@embedded_only
async def test_a_cut_off_call_is_not_made_again_under_its_idempotency_key(
    make_client: ClientFactory, auth: dict[str, str], raw_server: StartRaw
) -> None:
    server = await raw_server(answer("HTTP/1.1 200 OK", b"z" * 4096))
    client = await make_client(outbound_max_response_bytes=2048)
    calls = []
    for _ in range(2):
        request = {**trigger(server.url(), [{}]), "idempotency_key": "big-1"}
        calls.append(await (await client.post(EXECUTE, json=request, headers=auth)).json())
    assert "BRIDGE_OUTBOUND_MAX_RESPONSE_BYTES" in calls[0]["errors"][0]["message"]
    assert calls[1]["items"][0]["json"]["n8n"]["duplicate"] is True
    assert len(server.tasks) == 1  # one call reached the server


async def tarpit(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await asyncio.sleep(3600)  # takes the request, never answers


async def trickle(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while True:  # one byte now and then: never idle long enough for a read timeout
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.2)


async def trickle_headers(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:  # a header that never ends
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.2)


SLOW = [tarpit, trickle_headers, trickle]
SLOW_IDS = ["tarpit", "trickle-headers", "trickle-body"]


@embedded_only
@pytest.mark.parametrize("handler", SLOW, ids=SLOW_IDS)
async def test_n8n_trigger_ends_at_its_timeout(
    make_client: ClientFactory, auth: dict[str, str], raw_server: StartRaw, handler: RawHandler
) -> None:
    server = await raw_server(handler)
    client = await make_client(n8n_timeout_s=1, n8n_max_attempts=1)
    started = time.monotonic()
    body = await (await client.post(EXECUTE, json=trigger(server.url(), [{}]), headers=auth)).json()
    assert time.monotonic() - started < 15  # 1 s, with room for a loaded machine
    assert "no answer within the timeout" in body["errors"][0]["message"]


@embedded_only
@pytest.mark.parametrize("handler", SLOW[:2], ids=SLOW_IDS[:2])  # a callback reads no body
async def test_a_callback_ends_at_its_timeout(
    make_client: ClientFactory, auth: dict[str, str], raw_server: StartRaw, handler: RawHandler
) -> None:
    server = await raw_server(handler)
    client = await make_client(callback_timeout_s=1, callback_max_attempts=1)
    started = time.monotonic()
    accepted = await (
        await client.post(EXECUTE, json=job("echo", callback_url=server.url()), headers=auth)
    ).json()
    done = await after_callback(client, auth, accepted["job_id"], "failed")
    assert time.monotonic() - started < 15
    assert "no answer within the timeout" in done["callback"]["last_error"]


@embedded_only
async def test_no_cookie_from_one_call_reaches_another(
    client: TestClient, auth: dict[str, str], raw_server: StartRaw, target: Target
) -> None:
    """Cookies are kept per host name, not per port: the target, on the same host as the setter,
    would otherwise get the setter's cookie."""
    cookie = answer("HTTP/1.1 200 OK", b"{}", Set_Cookie="session=someone-elses; Path=/")
    setter = await raw_server(cookie)
    for url in (setter.url(), target.url()):
        request = trigger(url.replace("127.0.0.1", "localhost"), [{}])
        assert (await client.post(EXECUTE, json=request, headers=auth)).status == 200
    [call] = target.received
    assert "Cookie" not in call.headers


@embedded_only
async def test_no_proxy_is_taken_from_the_environment(
    make_client: ClientFactory,
    auth: dict[str, str],
    target: Target,
    canary: Canary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, canary.url(path=""))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = await make_client()
    await client.post(EXECUTE, json=trigger(target.url(), [{}]), headers=auth)
    assert canary.connections == 0 and len(target.received) == 1
