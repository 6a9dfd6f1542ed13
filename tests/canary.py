"""A loopback canary: a real TCP server that records every connection it gets and answers
any request with a 200 ("canary"). A refused outbound request must leave it untouched — not even a connection, so a guard
that let the connection through and stopped later does not pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest


@dataclass
class Canary:
    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)

    def url(self, host: str = "127.0.0.1", path: str = "/canary") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.received += await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    canary = Canary()
    server = await asyncio.start_server(canary.handle, "127.0.0.1", 0)
    canary.port = server.sockets[0].getsockname()[1]
    yield canary
    server.close()
    await server.wait_closed()


# (the server, what the request sends, where the answer goes)
RawHandler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """A loopback server whose answers a test writes byte by byte (malformed, endless, silent);
    `sent` counts the bytes it managed to write."""

    handler: RawHandler
    port: int = 0
    sent: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[RawServer]]]:
    started: list[tuple[asyncio.Server, RawServer]] = []

    async def start(handler: RawHandler) -> RawServer:
        raw = RawServer(handler)
        server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        raw.port = server.sockets[0].getsockname()[1]
        started.append((server, raw))
        return raw

    yield start
    for server, raw in started:
        server.close()
        for task in raw.tasks:  # a tarpit's handler never ends by itself
            task.cancel()
        await asyncio.gather(*raw.tasks, return_exceptions=True)
