"""URLs an API caller gives the bridge to call — a job's `callback_url`, a subscription's `url`,
`n8n_trigger`'s `webhook` — pass one check, so that the URL called is the URL given.

An HTTP client or server reads some text otherwise than as written: a URL parser drops tabs and
line breaks (`/x\\r\\nX: y` was called as `/xX:%20y`) and resolves `.` and `..` segments
(`/webhook/../../x` reaches `/x`); a server or a proxy in front of it decodes `%2e%2e`, once or
twice (`%252e%252e`), reads a backslash as a slash and `..;x` as `..`. So a given URL is refused
unless it is visible ASCII (RFC 3986: anything else percent-encoded) of at most 2,048
characters, and no segment of its path is `.` or `..` in any of those spellings. Absolute URLs
must be http(s) with a host; where they may go is the outbound guard's to judge.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote_to_bytes, urlsplit

from pydantic import AfterValidator, Field

# Browsers and proxies handle about 2,000 characters; an n8n resume URL is under 200.
MAX_LENGTH = 2048
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]*").fullmatch
_IIS_ESCAPE = re.compile(r"%u([0-9a-fA-F]{4})")  # IIS decodes %u002e as "."
_SEGMENT_SPLIT = re.compile(r"[/\\]")
SCHEMES = ("http", "https")


def problem(url: str) -> str | None:
    """Why a given URL (absolute, or a path) would not be called as given; None if it would."""
    if len(url) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    if not _VISIBLE_ASCII(url) or "\\" in url:
        return (
            "no spaces, control characters, backslashes or characters outside ASCII "
            "(percent-encode them)"
        )
    split = urlsplit(url)
    absolute = split.scheme or split.netloc
    if absolute and (split.scheme.lower() not in SCHEMES or not split.hostname):
        return "an http or https URL with a host"
    return _dot_segment(split.path)


def _dot_segment(path: str) -> str | None:
    """A `.` or `..` segment, however it is encoded: decoded until nothing changes (double
    encoding), with `%uXXXX`, backslashes and `;parameters` read as servers read them."""
    text = path
    while True:
        text = _IIS_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
        try:
            decoded = unquote_to_bytes(text).decode()
        except UnicodeDecodeError:  # overlong forms (%c0%ae) are "." to some servers
            return "percent-encoded bytes must be UTF-8"
        if decoded == text:
            break
        text = decoded
    for segment in _SEGMENT_SPLIT.split(text):
        if segment.partition(";")[0] in (".", ".."):
            return "no . or .. path segments, in any encoding"
    return None


def _checked(url: str) -> str:
    reason = problem(url)
    if reason is None and not urlsplit(url).scheme:
        reason = "an absolute http or https URL"
    if reason is not None:
        raise ValueError(reason)
    return url


# An absolute URL a caller gives for the bridge to call: kept as given, never normalised.
GivenUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_LENGTH,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[\x21-\x7e]+$",
        json_schema_extra={"format": "uri"},
    ),
    AfterValidator(_checked),
]
