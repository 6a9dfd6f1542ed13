"""Secrets out of URLs before they are shown: the one way every stored or logged URL is printed.

A URL a caller gave may carry credentials (`https://user:password@host/…`) or capabilities in its
query (n8n 2.x resume URLs are `/webhook-waiting/ID?signature=…`: whoever reads the signature can
resume the execution). Status answers, events, dead letters, `/admin/status`, logs and error texts
show URLs only through `redact_url`, which keeps scheme, host, port and path.

Taken apart as text, not by a URL parser: a password holding an unescaped `/` or `?`
(`redis://:pa/ss@host`) makes parsers see a path, and the password with it. Anything before the
last `@` of what follows `scheme://` (up to the query) is masked — a path with an `@` in it is
masked too, which errs on the safe side.
"""

from __future__ import annotations

MASK = "***"


def redact_url(url: str) -> str:
    """`url` with its userinfo and query replaced by `***` and its fragment dropped."""
    url = url.partition("#")[0]
    head, question, _query = url.partition("?")
    scheme, sep, rest = head.partition("://")
    if sep and "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    return f"{scheme}{sep}{rest}" + (f"?{MASK}" if question else "")
