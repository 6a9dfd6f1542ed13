"""The HTTP edge: the connection handler in front of the app (`EdgeRunner` serves with it).

aiohttp's own handler answers a malformed request with a text page quoting the offending bytes and
logs them at ERROR with a traceback: a credential followed by one control character reached the
log whole, and any client could fill the log with tracebacks at will. It bounds neither the time
a request head nor a body may take (slowloris), and names itself in a Server header. Here:

- every parser error (any `HttpProcessingError`: method, version, URL, header name or value, line
  too long, too many headers, Content-Length, chunked encoding — before or in the middle of a
  body) is answered with the shared JSON error body and an X-Trace-ID, and logged as one warning
  line naming the class of error and the peer's address, never a header value or a raw byte;
- a request head not whole within BRIDGE_HEADER_TIMEOUT_S of its first byte closes the connection;
  a body not whole within BRIDGE_BODY_TIMEOUT_S of its head is answered 408; an idle connection is
  closed after BRIDGE_KEEPALIVE_TIMEOUT_S (aiohttp's keep-alive timer, which also bounds a
  connection that never sends a byte);
- these lines share one budget: LOG_LINES_PER_MINUTE, then the count of lines left out is told on
  the next line let through;
- no answer carries a Server header (`no_server_header` for the app's answers, `_Bare` for the
  handler's own).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from bridge.api.middleware import TRACE_HEADER, header_secrets, malformed
from bridge.errors import BridgeError, Internal, Timeout
from bridge.ids import new_id
from bridge.items import dumps
from bridge.keys import SETTINGS
from bridge.logs import REDACT, Throttle
from bridge.settings import Settings

log = logging.getLogger(__name__)

LOG_LINES_PER_MINUTE = 20


async def no_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: aiohttp adds `Server: Python/… aiohttp/…` to every answer."""
    response.headers.popall(hdrs.SERVER, None)


class _Bare(web.Response):
    """An answer of the connection handler itself: it goes through no app, so no
    on_response_prepare hook removes the Server header; this does."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


class EdgeLog:
    """The edge's warning lines, within one budget shared by every connection."""

    def __init__(self) -> None:
        self._throttle = Throttle(LOG_LINES_PER_MINUTE)

    def warning(self, message: str, *args: Any, peer: str) -> None:
        left_out = self._throttle.admit()
        if left_out is None:
            return
        if left_out:
            message += f" ({left_out} more like it left out of the log)"
        log.warning(message, *args, extra={"peer": peer, "suppressed": left_out})


class EdgeHandler(RequestHandler):
    __slots__ = ("_body", "_body_timer", "_edge_log", "_head_timer", "_settings")

    def __init__(self, manager: web.Server, settings: Settings, edge_log: EdgeLog, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._settings = settings
        self._edge_log = edge_log
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # a body still arriving
        self._body_timer: asyncio.TimerHandle | None = None

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else str(peer or "unknown")

    def data_received(self, data: bytes) -> None:
        parsed, body = self._request_count, self._body
        super().data_received(data)
        if self._request_count == parsed:  # no head completed: bytes of a head or of a body
            if data and self._head_timer is None and self._body is None and not self._close:
                self._head_timer = self._loop.call_later(
                    self._settings.header_timeout_s, self._head_late
                )
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        message, payload = self._messages[-1]
        if isinstance(message, _ErrInfo):
            if body is not None and not body.is_eof():
                # The error is in the body a handler is reading: it answers, through its reader.
                self._messages.pop()
                self._log_malformed(message.exc)
                self._fail_body(body, malformed(message.exc))
        elif not payload.is_eof():
            self._body = payload
            self._body_timer = self._loop.call_later(
                self._settings.body_timeout_s, self._body_late, payload
            )
            payload.on_eof(functools.partial(self._body_done, payload))

    def _head_late(self) -> None:
        self._head_timer = None
        if self._force_close or self._close:
            return
        self._edge_log.warning(
            "request head from %s not whole after %g s (BRIDGE_HEADER_TIMEOUT_S): closed",
            self._peer(),
            self._settings.header_timeout_s,
            peer=self._peer(),
        )
        if self._waiter is not None and not self._waiter.done():
            self.force_close()  # idle between requests: nothing to finish
        else:
            self.close()  # an answer is under way: the connection ends after it

    def _body_done(self, payload: StreamReader) -> None:
        if self._body is payload:
            self._body = None
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

    def _body_late(self, payload: StreamReader) -> None:
        self._body_timer = None
        if self._body is not payload or payload.is_eof():
            return
        seconds = self._settings.body_timeout_s
        self._edge_log.warning(
            "request body from %s not whole after %g s (BRIDGE_BODY_TIMEOUT_S): answered 408",
            self._peer(),
            seconds,
            peer=self._peer(),
        )
        self._fail_body(
            payload,
            Timeout(
                f"the request body did not arrive whole within BRIDGE_BODY_TIMEOUT_S "
                f"({seconds:g} s)",
                http_code=408,
                description="the connection is closed after this answer",
            ),
        )

    def _fail_body(self, payload: StreamReader, error: BridgeError) -> None:
        """The handler reading `payload` gets `error` (the errors middleware answers it); the
        connection ends after that answer (`finish_response`), and reads nothing more."""
        self._body_done(payload)
        self.close()
        payload.set_exception(error)

    def _log_malformed(self, exc: BaseException) -> None:
        self._edge_log.warning(
            "malformed request from %s: %s (%s)",
            self._peer(),
            malformed(exc).message.removeprefix("malformed request: "),
            type(exc).__name__,
            peer=self._peer(),
        )

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if request.content.exception() is not None:
            # The body broke (malformed, cut off, too slow): aiohttp would linger reading the
            # rest of it and log the same error again as "Unhandled exception".
            self._lingering_time = 0.0
            self.close()
        if self._close:
            resp.force_close()  # the connection ends after this answer: say so
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if self._body is request.content:  # answered before its body was whole
                self._body_done(request.content)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A parser error, or an error that escaped the app's middlewares (a bug): the shared
        error body, never aiohttp's text page with the parser's message or a traceback."""
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was partly sent: no error answer can follow")
        error: BridgeError
        if isinstance(exc, HttpProcessingError):
            self._log_malformed(exc)
            error = malformed(exc)
        else:
            log.error(
                "unhandled error answering %s %s",
                request.method,
                request.path,
                exc_info=exc,
                extra={REDACT: header_secrets(request.headers)},
            )
            error = Internal("internal error") if status != 504 else Timeout("request timed out")
        trace_id = new_id()
        response = _Bare(
            body=dumps(error.to_body(trace_id)),
            status=error.http_code,
            content_type="application/json",
            headers={TRACE_HEADER: trace_id},
        )
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None
        super().connection_lost(exc)


class EdgeServer(web.Server):
    """aiohttp's server (the protocol factory) making `EdgeHandler`s."""

    def __init__(self, handler: Any, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._settings = settings
        self._edge_log = EdgeLog()

    def __call__(self) -> RequestHandler:
        return EdgeHandler(self, self._settings, self._edge_log, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """`web.AppRunner` serving the app through `EdgeServer`, with the keep-alive bound."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        settings = app[SETTINGS]
        super().__init__(app, keepalive_timeout=settings.keepalive_timeout_s, **kwargs)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app and applies its handler options
        return EdgeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            settings=self.app[SETTINGS],
            **plain._kwargs,  # the options aiohttp gathered: debug, access log, keep-alive
        )
