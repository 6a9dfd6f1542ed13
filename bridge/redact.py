"""Secrets out of URLs before they are shown: the one way every stored or logged URL is printed.

A URL a caller gave may carry credentials (`https://user:password@host/…`) or capabilities in its
query (n8n 2.x resume URLs are `/webhook-waiting/ID?signature=…`: whoever reads the signature can
resume the execution) or in path parameters (`/cb;signature=…`, RFC 3986 `;` parameters, which
servers such as Java ones read like a query). Status answers, events, dead letters,
`/admin/status`, logs and error texts show URLs only through `redact_url`, which keeps scheme,
host, port and the path's segments without their parameters.

Taken apart as text, not by a URL parser: a password holding an unescaped `/` or `?`
(`redis://:pa/ss@host`) makes parsers see a path, and the password with it. Anything before the
last `@` of what follows `scheme://` (up to the query) is masked — a path with an `@` in it is
masked too, which errs on the safe side.

The delimiters count percent-encoded too, once or more (`%3B`, `%253b`, …): a server or proxy
that decodes the path before reading it sees `;` parameters, a query after `%3F` and a fragment
after `%23` (masked to the path's end, as a query would be), and a parser that decodes the
authority sees userinfo before `%40`. Other escapes stay as they are.
"""

from __future__ import annotations

import re

MASK = "***"
_ENCODED = r"%(?:25)*"  # a percent-encoding, itself encoded any number of times
_PARAMETERS = re.compile(rf"(;|{_ENCODED}3b)[^/]*", re.IGNORECASE)
_QUERY_OR_FRAGMENT = re.compile(rf"({_ENCODED}(?:3f|23)).*", re.IGNORECASE | re.DOTALL)
_USERINFO = re.compile(rf"\A.*(?:@|{_ENCODED}40)", re.IGNORECASE | re.DOTALL)  # to the last one


def redact_url(url: str) -> str:
    """`url` with its userinfo, path parameters and query replaced by `***` and its fragment
    dropped."""
    url = url.partition("#")[0]
    head, question, _query = url.partition("?")
    scheme, sep, rest = head.partition("://")
    if sep:
        rest = _USERINFO.sub(f"{MASK}@", rest, count=1)
    authority, slash, path = rest.partition("/") if sep else ("", "", rest)
    path = _QUERY_OR_FRAGMENT.sub(rf"\1{MASK}", path, count=1)
    path = _PARAMETERS.sub(rf"\1{MASK}", path)
    return f"{scheme}{sep}{authority}{slash}{path}" + (f"?{MASK}" if question else "")
