"""bridge.redact: what a shown URL keeps and what it loses."""

from __future__ import annotations

import pytest

from bridge.redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://n8n.example.com/webhook/abc", "https://n8n.example.com/webhook/abc"),
        (
            "http://n8n:5678/webhook-waiting/42?signature=0123abcd",
            "http://n8n:5678/webhook-waiting/42?***",
        ),
        ("https://user:secret@h.example:8443/p?a=1#frag", "https://***@h.example:8443/p?***"),
        ("redis://:pw@redis:6379/0?password=other", "redis://***@redis:6379/0?***"),
        ("unix:///run/redis.sock?password=x", "unix:///run/redis.sock?***"),
        ("redis://:pa/ss@redis:6379/0", "redis://***"),  # '/' in a password
        ("redis://:pa?ss@redis:6379/0", "redis://***?***"),  # '?' in a password
        ("http://h/p#user:secret@x", "http://h/p"),
        ("http://h/p?", "http://h/p?***"),
        # path parameters (RFC 3986 `;`), which some servers read as a query
        ("http://h/cbpath;signature=PARAMSECRET", "http://h/cbpath;***"),
        ("http://h/a;x=1/b;y=2?q=3", "http://h/a;***/b;***?***"),
        ("http://u:pw@h;x/p", "http://***@h;x/p"),
        ("http://h;jsessionid=1", "http://h;jsessionid=1"),  # no path: an (invalid) host
        # the same delimiters percent-encoded, once or more, in either case: a server that
        # decodes the path before reading it sees `;`, `?`, `#` — and an encoded `@` before
        # the host is masked like `@`
        ("http://h/cb%3Bsignature=S5/x%3bsig=S6", "http://h/cb%3B***/x%3b***"),
        ("http://h/cb%253Bsig=S7/x", "http://h/cb%253B***/x"),
        ("http://h/cb%3Fsignature=S8/more", "http://h/cb%3F***"),
        ("http://h/cb%3fsig=S9", "http://h/cb%3f***"),
        ("http://h/cb%25253Fsig=S10", "http://h/cb%25253F***"),
        ("http://h/cb%23sig=S11/x", "http://h/cb%23***"),
        ("http://u%40S12@h/p", "http://***@h/p"),
        ("http://S13%40h/p", "http://***@h/p"),
        ("http://h/a%2Fb/%3Cok%3E", "http://h/a%2Fb/%3Cok%3E"),  # other escapes stay
        # the userinfo is in the authority only (to the first `/`, `?` or `#`): the host shown
        # is the host called; an `@` in the path is the path's, and its segment may hold a
        # password or a capability on either side (`/u@SECRET@x`): the segment is masked
        ("http://127.0.0.1:8/u%40SECRET8@x/cb", "http://127.0.0.1:8/***/cb"),
        ("http://h/u@SECRET9/cb", "http://h/***/cb"),
        ("http://h/a/b@c@d/e", "http://h/a/***/e"),
        ("http://u:pw@h/a@SECRET10/e", "http://***@h/***/e"),
        ("http://h/a%2540S/e", "http://h/***/e"),
        # an authority that is no host[:port] is a password cut short by a `/` or `?`: all masked
        ("http://:12/S/x@h/p", "http://***"),
        ("http://u:pw%40x@h/p", "http://***@h/p"),
        ("http://h?x=@SECRET11", "http://h?***"),
        ("http://h#x@SECRET12", "http://h"),
        ("http://u:p@h", "http://***@h"),
        # `%uXXXX` (IIS) spellings of `;`, `?`, `#`, `@`, once or more encoded, either case
        ("http://h/cb%u003bsig=S13/x", "http://h/cb%u003b***/x"),
        ("http://h/cb%U003Bsig=S14/x", "http://h/cb%U003B***/x"),
        ("http://h/cb%u003fsig=S15/x", "http://h/cb%u003f***"),
        ("http://h/cb%25u003Fsig=S16/x", "http://h/cb%25u003F***"),
        ("http://h/cb%u0023sig=S17/x", "http://h/cb%u0023***"),
        ("http://h/u%u0040S18/x", "http://h/***/x"),
    ],
)
def test_userinfo_and_query_never_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown
