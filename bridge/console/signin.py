"""Signing in and out of the console. The credential travels once, in a POSTed form, and is
never put in a URL, a page or the browser's storage: the browser keeps only the session cookie."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiohttp import web

from bridge.console.guard import error_page, read_form, refuse_cross_site, safe_next
from bridge.console.render import SESSION, page, redirect
from bridge.console.sessions import COOKIE, LOGIN_COOKIE, LOGIN_FORM_S, SESSIONS
from bridge.console.throttle import SignInThrottle
from bridge.errors import AuthenticationFailed, Forbidden, PayloadTooLarge

COOKIE_PATH = "/admin/ui/"
THROTTLE: web.AppKey[SignInThrottle] = web.AppKey("console_sign_in_throttle")


def _over_https(request: web.Request) -> bool:
    """HTTPS to this process, or to the proxy in front of it (HAProxy sets the header when it
    ends TLS). Trusting the header costs nothing: it only adds `Secure` to the cookie."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _text(form: Mapping[str, object], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=_over_https(request),
    )


def _form(
    request: web.Request, target: str | None, *, status: int = 200, error: str | None = None
) -> web.Response:
    nonce, token = request.app[SESSIONS].login_form()
    response = page(
        request,
        "login.html",
        status=status,
        title="Sign in",
        csrf=token,
        error=error,
        next=safe_next(target),
    )
    _set_cookie(response, request, LOGIN_COOKIE, nonce, LOGIN_FORM_S)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    session = sessions.find(request.cookies.get(COOKIE))
    if session is not None:
        limited = session.principal.workflows is not None
        return redirect(safe_next(request.query.get("next"), limited=limited))
    return _form(request, request.query.get("next"))


async def login(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    try:
        refuse_cross_site(request)
        form = await read_form(request)
    except (Forbidden, PayloadTooLarge) as exc:
        return error_page(request, exc)
    credential, token, target = (_text(form, name) for name in ("credential", "csrf", "next"))
    if not sessions.login_form_valid(request.cookies.get(LOGIN_COOKIE), token):
        return _form(request, target, status=403, error="The form was stale; please try again.")
    try:
        session, cookie = sessions.open((credential or "").strip())
    except AuthenticationFailed as exc:
        await asyncio.sleep(request.app[THROTTLE].failed(request.remote or "unknown"))
        return _form(request, target, status=401, error=f"Not signed in: {exc.message}.")
    response = redirect(safe_next(target, limited=session.principal.workflows is not None))
    _set_cookie(response, request, COOKIE, cookie, max(1, int(session.expires_at - time.time())))
    response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """Behind the guard: only a live session with its CSRF token signs out."""
    request.app[SESSIONS].close(request[SESSION].id)
    response = redirect("/admin/ui/login")
    response.del_cookie(COOKIE, path=COOKIE_PATH)
    return response
