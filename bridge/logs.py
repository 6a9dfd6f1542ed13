"""Logging: JSON lines on stdout (or console text), with the trace, job and workflow ids of the
request or job being worked on added to every line from context variables."""

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

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_CONTEXT_FIELDS = ("trace_id", "job_id", "workflow_id")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    attributes = record.__dict__
    fields = {k: attributes[k] for k in attributes.keys() - _STANDARD}
    for name, var in zip(_CONTEXT_FIELDS, (trace_id_var, job_id_var, workflow_id_var), strict=True):
        if fields.get(name) is None:
            fields[name] = var.get()
    return fields


class JsonFormatter(logging.Formatter):
    def __init__(self, color: str | None) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "color": self.color,
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
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
        return text


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
