"""Logging: JSON lines on stdout (or console text), with the trace, job and workflow ids of the
request or job being worked on added to every line from context variables.

A line may name values that must not appear in it (`extra={REDACT: values}`, e.g. the header
values of the request whose traceback is logged): both formatters mask them in the message and
the traceback. `Throttle` bounds lines any client can cause at will."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal, TextIO

import orjson

trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)
workflow_id_var: ContextVar[str | None] = ContextVar("workflow_id", default=None)

REDACT = "redact"
MASK = "***"
# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    REDACT,
}
_CONTEXT_FIELDS = ("trace_id", "job_id", "workflow_id")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    attributes = record.__dict__
    fields = {k: attributes[k] for k in attributes.keys() - _STANDARD}
    for name, var in zip(_CONTEXT_FIELDS, (trace_id_var, job_id_var, workflow_id_var), strict=True):
        if fields.get(name) is None:
            fields[name] = var.get()
    return fields


def _masked(record: logging.LogRecord, text: str) -> str:
    for value in getattr(record, REDACT, ()):
        text = text.replace(value, MASK)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, color: str | None) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _masked(record, record.getMessage()),
            "color": self.color,
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = _masked(record, self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def __init__(self, color: str | None) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in _fields(record).items() if v is not None}
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        color = f"[{self.color}] " if self.color else ""
        text = (
            f"{_iso(record.created)} {record.levelname:<7} {color}{record.name}: "
            f"{record.getMessage()} {tail}".rstrip()
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return _masked(record, text)


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def _iso(created: float) -> str:
    return f"{_second(int(created))}.{int(created % 1 * 1000):03d}Z"


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines into the stream's buffer without a flush (a system call) per line: the
    daemon flushes every FLUSH_INTERVAL_S (`flush_now`), warnings and errors go out at once,
    and a terminal gets every line at once."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._interactive = stream.isatty()

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self._interactive or record.levelno >= logging.WARNING:
            self.flush_now()

    def flush(self) -> None:
        """Called by `emit` after every line; the real flush is `flush_now`."""

    def flush_now(self) -> None:
        with contextlib.suppress(ValueError):  # stream already closed at exit
            self.stream.flush()

    def close(self) -> None:
        self.flush_now()
        super().close()


FLUSH_INTERVAL_S = 0.5


class Throttle:
    """At most `per_minute` lines a minute: a burst of that many, then one more every
    60 / `per_minute` seconds (a token bucket). `admit` answers None for a line to leave out,
    else how many were left out since the last one let through."""

    def __init__(self, per_minute: int) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = self._capacity
        self._last = time.monotonic()
        self._left_out = 0

    def admit(self) -> int | None:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self._left_out += 1
            return None
        self._tokens -= 1
        left_out, self._left_out = self._left_out, 0
        return left_out


def flush_now() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchingHandler):
            handler.flush_now()


def configure(log_format: Literal["json", "console"], level: str, color: str | None = None) -> None:
    """Route every logger (ours, aiohttp's, asyncio's) to one stdout handler."""
    # We never print the caller, process or thread of a record, so logging need not look them
    # up for every line (logging HOWTO, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(color) if log_format == "json" else ConsoleFormatter(color))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Our access log replaces aiohttp's, which knows nothing of trace ids.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters at DEBUG: whole job records,
    # items and callback URLs.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
