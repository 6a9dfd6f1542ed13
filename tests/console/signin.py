"""Signing in to the console from a test client: the form's CSRF token and cookie, then the
session cookie."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def sign_in(client: TestClient, credential: str, next_path: str = "/admin/ui/") -> str:
    """Sign in; returns the CSRF token of the page signed in to."""
    form = await client.get("/admin/ui/login")
    answer = await client.post(
        "/admin/ui/login",
        data={"credential": credential, "csrf": csrf_of(await form.text()), "next": next_path},
        allow_redirects=False,
    )
    assert answer.status == 303, await answer.text()
    page = await client.get(answer.headers["Location"])
    assert page.status == 200
    return csrf_of(await page.text())
