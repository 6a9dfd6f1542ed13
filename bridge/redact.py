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
"""

from __future__ import annotations

import re

MASK = "***"
_PARAMETERS = re.compile(r";[^/]*")


def redact_url(url: str) -> str:
    """`url` with its userinfo, path parameters and query replaced by `***` and its fragment
    dropped."""
    url = url.partition("#")[0]
    head, question, _query = url.partition("?")
    scheme, sep, rest = head.partition("://")
    if sep and "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    authority, slash, path = rest.partition("/") if sep else ("", "", rest)
    path = _PARAMETERS.sub(f";{MASK}", path)
    return f"{scheme}{sep}{authority}{slash}{path}" + (f"?{MASK}" if question else "")
