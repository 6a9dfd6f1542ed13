"""Secrets out of URLs before they are shown: the one way every stored or logged URL is printed.

A URL a caller gave may carry credentials (`https://user:password@host/…`) or capabilities in its
query (n8n 2.x resume URLs are `/webhook-waiting/ID?signature=…`: whoever reads the signature can
resume the execution) or in path parameters (`/cb;signature=…`, RFC 3986 `;` parameters, which
servers such as Java ones read like a query). Status answers, events, dead letters,
`/admin/status`, logs and error texts show URLs only through `redact_url`, which keeps scheme,
host, port and the path's segments without their parameters.

Taken apart as text, not by a URL parser, the way an HTTP client reads it: the authority runs
from `scheme://` to the first `/`, `?` or `#`, and it is the host called; anything before its last
`@` (or `%40`) is userinfo and masked. An authority that is then no `host[:port]` is a password
cut short by an unescaped `/` or `?` (`redis://:pa/ss@host`): the whole URL after `scheme://` is
masked. An `@` in the path is the path's own: the host shown stays the host called, and the
segment holding it is masked whole, since either side may be a password or a capability
(`/u%40SECRET@x`).

The delimiters count percent-encoded too, once or more (`%3B`, `%253b`, …) and in IIS's
`%uXXXX` form (`%u003b`, either case): a server or proxy that decodes the path before reading it
sees `;` parameters, a query after `%3F` and a fragment after `%23` (masked to the path's end, as
a query would be), and a parser that decodes the authority sees userinfo before `%40`. Other
escapes stay as they are.
"""

from __future__ import annotations

import re

MASK = "***"
_ENCODED = r"%(?:25)*(?:u00)?"  # a percent-encoding, itself encoded any number of times, or IIS's
_PARAMETERS = re.compile(rf"(;|{_ENCODED}3b)[^/]*", re.IGNORECASE)
_QUERY_OR_FRAGMENT = re.compile(rf"({_ENCODED}(?:3f|23)).*", re.IGNORECASE | re.DOTALL)
_AT = re.compile(rf"@|{_ENCODED}40", re.IGNORECASE)
_USERINFO = re.compile(rf"\A.*(?:@|{_ENCODED}40)", re.IGNORECASE | re.DOTALL)  # to the last one
# host[:port], or nothing (`unix:///path`): an IP literal in brackets or a name without `:`.
_HOST_PORT = re.compile(r"(?:(?:\[[^\]]*\]|[^:\[\]]+)(?::[0-9]*)?)?").fullmatch


def redact_url(url: str) -> str:
    """`url` with its userinfo, path parameters, path segments holding an `@`, and query
    replaced by `***` and its fragment dropped."""
    url = url.partition("#")[0]
    head, question, _query = url.partition("?")
    query = f"?{MASK}" if question else ""
    scheme, sep, rest = head.partition("://")
    if not sep:
        authority, slash, path = "", "", rest
    else:
        authority, slash, path = rest.partition("/")
        userinfo = _USERINFO.match(authority)
        host = authority[userinfo.end() :] if userinfo else authority
        if not _HOST_PORT(host):
            return f"{scheme}{sep}{MASK}{query}"
        authority = f"{MASK}@{host}" if userinfo else host
    path = _QUERY_OR_FRAGMENT.sub(rf"\1{MASK}", path, count=1)
    path = "/".join(MASK if _AT.search(segment) else segment for segment in path.split("/"))
    path = _PARAMETERS.sub(rf"\1{MASK}", path)
    return f"{scheme}{sep}{authority}{slash}{path}{query}"
