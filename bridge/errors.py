"""The bridge's error taxonomy: one exception per error code, each knowing its HTTP answer.

    BridgeError                      (code, http_code, retryable)
    ├── ValidationFailed             validation             400 malformed body / 422 schema
    ├── AuthenticationFailed         auth                   401
    ├── Forbidden                    forbidden              403
    ├── NotFound                     not_found              404
    ├── Conflict                     conflict               409 (e.g. cancelling a finished job)
    ├── PayloadTooLarge              payload_too_large      413
    ├── UnsupportedMediaType         unsupported_media_type 415
    ├── Overloaded                   overloaded             429 retryable (a queue is full)
    ├── ProcessorFailed              processor_error        500 (a processor raised for a whole job)
    ├── Timeout                      timeout                504 retryable
    ├── IntegrationFailed            integration            502 retryable (a remote service failed)
    ├── Unavailable                  unavailable            503 retryable (draining, backend down)
    └── Internal                     internal               500

Every error reaches a client as the shared body of the design notes (see `to_body`), shaped for
n8n's NodeApiError; nothing else — no stack trace, no HTML — is ever sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

# An error text may quote what a caller sent (a processor's exception, a value it refused); it is
# kept in jobs, results, callbacks and events, so it is cut to this many characters, marked.
MAX_ERROR_CHARS = 2000


def cut_short(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text`, or its first `limit` characters and a marker saying how many more were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} characters cut]"


class BridgeError(Exception):
    code: ClassVar[str] = "internal"
    http_code: int = 500  # a class default; an instance may answer another status
    retryable: bool = False  # a class default; an instance may say otherwise

    def __init__(
        self,
        message: str,
        *,
        description: str | None = None,
        details: Any = None,
        http_code: int | None = None,
        retryable: bool | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = cut_short(message)
        super().__init__(message)
        self.message = message
        self.description = description
        self.details = details
        self.headers = headers or {}
        if http_code is not None:
            self.http_code = http_code
        if retryable is not None:
            self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors raised in a process-pool worker come back pickled: keep every attribute.
        return (_rebuild, (type(self), self.message, self.__dict__))

    def to_body(self, trace_id: str) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "description": self.description,
                "http_code": self.http_code,
                "retryable": self.retryable,
                "trace_id": trace_id,
                "details": self.details,
            }
        }


def _rebuild(cls: type[BridgeError], message: str, state: dict[str, Any]) -> BridgeError:
    error = cls(message)
    error.__dict__.update(state)
    return error


class ValidationFailed(BridgeError):
    """The request is malformed (400) or breaks the schema (422); `details` lists the problems."""

    code = "validation"
    http_code = 422


class AuthenticationFailed(BridgeError):
    code = "auth"
    http_code = 401


class Forbidden(BridgeError):
    code = "forbidden"
    http_code = 403


class NotFound(BridgeError):
    code = "not_found"
    http_code = 404


class Conflict(BridgeError):
    code = "conflict"
    http_code = 409


class Overloaded(BridgeError):
    code = "overloaded"
    http_code = 429
    retryable = True


class PayloadTooLarge(BridgeError):
    code = "payload_too_large"
    http_code = 413


class UnsupportedMediaType(BridgeError):
    code = "unsupported_media_type"
    http_code = 415


class ProcessorFailed(BridgeError):
    code = "processor_error"
    http_code = 500


class Timeout(BridgeError):
    code = "timeout"
    http_code = 504
    retryable = True


class IntegrationFailed(BridgeError):
    code = "integration"
    http_code = 502
    retryable = True


class Unavailable(BridgeError):
    code = "unavailable"
    http_code = 503
    retryable = True


class Internal(BridgeError):
    code = "internal"
    http_code = 500


ERROR_CODES: tuple[str, ...] = (
    "validation",
    "auth",
    "forbidden",
    "not_found",
    "conflict",
    "payload_too_large",
    "overloaded",
    "unsupported_media_type",
    "processor_error",
    "timeout",
    "integration",
    "unavailable",
    "internal",
)


def json_pointer(parts: Iterable[Any]) -> str:
    """The JSON pointer (RFC 6901) to a place, for the `pointer` of a problem in `details`."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)
