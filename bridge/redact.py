"""Secrets out of URLs before they are shown: the one way every stored or logged URL is printed.

A URL a caller gave may carry credentials (`https://user:password@host/…`) or capabilities in its
query (n8n 2.x resume URLs are `/webhook-waiting/ID?signature=…`: whoever reads the signature can
resume the execution). Status answers, events, dead letters, `/admin/status`, logs and error texts
show URLs only through `redact_url`, which keeps scheme, host, port and path.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """`url` with its userinfo and query replaced by `***` and its fragment dropped."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:  # not a URL we can take apart: show nothing of it
        return MASK
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    text = urlunsplit((parts.scheme, netloc, parts.path, MASK if parts.query else "", ""))
    if not netloc and url.startswith(f"{parts.scheme}://"):  # unix:///path keeps its slashes
        text = text.replace(":", "://", 1)
    return text
