"""A loopback canary: a real TCP server that records every connection it gets and answers
any request with a 200 ("canary"). A refused outbound request must leave it untouched — not even a connection, so a guard
that let the connection through and stopped later does not pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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
