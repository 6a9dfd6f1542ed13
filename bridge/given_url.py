"""URLs an API caller gives the bridge to call — a job's `callback_url`, a subscription's `url`,
`n8n_trigger`'s `webhook` — pass one check, so that the URL called is the URL given.

An HTTP client or server reads some text otherwise than as written: a URL parser drops tabs and
line breaks (`/x\\r\\nX: y` was called as `/xX:%20y`), re-encodes what is not RFC 3986 (`%U002E`
was called as `%25U002E`) and resolves `.` and `..` segments (`/webhook/../../x` reaches `/x`); a
server or a proxy in front of it decodes `%2e%2e` once or more (`%252e%252e`, IIS's `%u002e`),
folds Unicode (NFKC: the full-width stop U+FF0E is `.`), reads a backslash or a slash look-alike
as a slash, ends a segment at a decoded `?`, `#` or `;` (`..%3F`, `..;x`), and trims trailing
NULs, controls, spaces and dots (IIS, Windows: `.. `, `..%00`, `.....`). And a fragment is
never sent: the client drops it, and with it a GET callback's outcome, appended to the query. So
a given URL is refused unless it is RFC 3986 characters (anything else percent-encoded, every
`%` starting two hex digits) of at most 2,048 characters without a fragment, its decoded path
holds no control character, and no segment of its path, read in all those ways, is dots alone.
Absolute URLs must be http(s) with a host; where they may go is the outbound guard's to judge.
What is accepted is called byte for byte (`as_called`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated
from urllib.parse import unquote_to_bytes, urlsplit

from pydantic import AfterValidator, Field
from yarl import URL

# Browsers and proxies handle about 2,000 characters; an n8n resume URL is under 200.
MAX_LENGTH = 2048
# RFC 3986: unreserved, reserved and `%`; a `%` must start an escape, or the client re-encodes it.
_RFC3986 = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*").fullmatch
_IIS_ESCAPE = re.compile(r"%u([0-9a-fA-F]{4})", re.IGNORECASE)  # IIS decodes %u002e as "."
# Where a server that decodes the path first ends a segment: slashes, backslashes and their
# look-alikes (division, fraction, full-width, small and big solidus), a query, a fragment,
# `;parameters`.
_SEGMENT_END = re.compile(r"[/\\?#;\u2215\u2044\uff0f\uff3c\ufe68\u29f5\u29f8\u29f9]")
# Dots, and the spaces servers trim from a segment's ends (controls are refused anyway): a
# segment of only these is a dot segment to some server. Ideographic full stops, which NFKC
# keeps, are read as dots too.
_DOTS_ONLY = re.compile(r"\s*(?:\.\s*)+").fullmatch
_IDEOGRAPHIC_DOTS = str.maketrans({"\u3002": ".", "\uff61": "."})
# Controls, format characters (zero-width, bidi) and line or paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
SCHEMES = ("http", "https")


def problem(url: str) -> str | None:
    """Why a given URL (absolute, or a path) would not be called as given; None if it would."""
    if len(url) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    if not _RFC3986(url):
        return (
            "only RFC 3986 characters: no spaces, control characters, backslashes, quotes, "
            "<>{}|^` or characters outside ASCII, and every % followed by two hex digits "
            "(percent-encode the rest)"
        )
    if "#" in url:
        return (
            "no fragment (#…, even an empty one): it is never sent over HTTP, so the "
            "receiver would not get it, nor a GET callback's outcome appended after it "
            "(percent-encode a # that is part of the path or query as %23)"
        )
    if url.endswith("?"):
        return "no empty query: the client would drop the ?"
    split = urlsplit(url)
    absolute = split.scheme or split.netloc
    if absolute and (split.scheme.lower() not in SCHEMES or not split.hostname):
        return "an http or https URL with a host"
    return _dot_segment(split.path)


def _dot_segment(path: str) -> str | None:
    """A segment of dots, however it is encoded or trimmed, or a control character: the path
    decoded until nothing changes (double encoding, `%uXXXX` in either case), NFKC-folded,
    split wherever some server ends a segment."""
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
    text = unicodedata.normalize("NFKC", text).translate(_IDEOGRAPHIC_DOTS)
    if any(unicodedata.category(char) in _INVISIBLE for char in text):
        return "no control or invisible characters in the path, in any encoding"
    for segment in _SEGMENT_END.split(text):
        if _DOTS_ONLY(segment):
            return "no . or .. path segments (nor dots alone, trimmed or spaced), in any encoding"
    return None


def as_called(url: str) -> URL:
    """The URL handed to the HTTP client: as given (checked by `problem`), not re-encoded."""
    return URL(url, encoded=True)


def _checked(url: str) -> str:
    reason = problem(url)
    if reason is None and not urlsplit(url).scheme:
        reason = "an absolute http or https URL"
    if reason is not None:
        raise ValueError(reason)
    return url


# An absolute URL a caller gives for the bridge to call: kept as given, never normalised. The
# pattern is the schema's outline of what `_checked` accepts (visible ASCII but `#`); only the
# check runs, so a refusal says why rather than quoting the pattern.
GivenUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_LENGTH,
        json_schema_extra={
            "format": "uri",
            "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[\x21\x22\x24-\x7e]+$",
        },
    ),
    AfterValidator(_checked),
]
