"""The one HTTP client for every outbound request (callbacks, event webhooks, `n8n_trigger`), and
how the bridge reads and describes what comes back.

`open_session` is the only place the bridge makes an `aiohttp.ClientSession`
(tests/test_outbound_doors.py fails on any other). Its session:
- is guarded (`bridge.outbound`): each request and each redirect by host and port, each name by
  the addresses it resolves to, before a connection is made;
- bounds every request in time (a total timeout; a caller may set a shorter or longer one, never
  none);
- takes no proxy from the environment and keeps no cookies: what one workflow's target sets is
  never sent on another's request.

`read_capped` reads an answer in chunks and stops at BRIDGE_OUTBOUND_MAX_RESPONSE_BYTES, so a
huge (or endless, or decompressing) answer costs that much memory at most. `status_text` and
`failure` say what went wrong in the bridge's own words: a remote service's text (its body, its
reason phrase, a malformed status line) never reaches an error, a dead letter or a log.
"""

from __future__ import annotations

from http import HTTPStatus

import aiohttp

from bridge import __version__
from bridge.outbound import GuardedResolver, OutboundGuard
from bridge.settings import Settings

CHUNK_BYTES = 64 * 1024


class ResponseTooLarge(Exception):
    """An answer longer than the bridge reads."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the answer is larger than BRIDGE_OUTBOUND_MAX_RESPONSE_BYTES ({limit} bytes)"
        )


def open_session(settings: Settings, guard: OutboundGuard) -> aiohttp.ClientSession:
    """The bridge's one client session, guarded."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.callback_timeout_s),
        connector=aiohttp.TCPConnector(
            limit=settings.callback_concurrency, resolver=GuardedResolver(guard)
        ),
        headers={"User-Agent": f"n8n-bridge/{__version__}"},
        middlewares=(guard.middleware,),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, read in chunks; ResponseTooLarge past `limit` bytes (decoded)."""
    if response.content_length is not None and response.content_length > limit:
        raise ResponseTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def status_text(status: int) -> str:
    """`HTTP 404 Not Found`: the standard phrase, never the one the server sent."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def failure(exc: BaseException) -> str:
    """A failed call (no usable answer) in the bridge's own words."""
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error.strerror
        return f"could not connect to {exc.host}:{exc.port}" + (f" ({cause})" if cause else "")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "the answer was not valid HTTP"  # the parser's message may quote the answer
    if isinstance(exc, OSError) and exc.strerror:
        return f"connection failed ({exc.strerror})"
    return f"the call failed ({type(exc).__name__})"
