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
        ("redis://:pa/ss@redis:6379/0", "redis://***@redis:6379/0"),  # '/' in a password
        ("redis://:pa?ss@redis:6379/0", "redis://:pa?***"),  # '?' in a password
        ("http://h/p#user:secret@x", "http://h/p"),
        ("http://h/p?", "http://h/p?***"),
        # path parameters (RFC 3986 `;`), which some servers read as a query
        ("http://h/cbpath;signature=PARAMSECRET", "http://h/cbpath;***"),
        ("http://h/a;x=1/b;y=2?q=3", "http://h/a;***/b;***?***"),
        ("http://u:pw@h;x/p", "http://***@h;x/p"),
        ("http://h;jsessionid=1", "http://h;jsessionid=1"),  # no path: an (invalid) host
    ],
)
def test_userinfo_and_query_never_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown
