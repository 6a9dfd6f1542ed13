"""What stands before every console page: a live session (else the sign-in page), the CSRF
token on every POST, the workflow limit of the session's credential, and errors shown as a
page (not the JSON API's error body)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote, unquote, urlsplit

from aiohttp import web

from bridge.console.render import EVENTS_AFTER, SESSION, page, redirect
from bridge.console.sessions import COOKIE, SESSIONS
from bridge.errors import BridgeError, Forbidden, Internal, PayloadTooLarge
from bridge.keys import EVENTS, PRINCIPAL, TRACE_ID

log = logging.getLogger(__name__)
Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_page(request: web.Request, exc: BridgeError) -> web.Response:
    log.info("%s %s → %d: %s", request.method, request.path, exc.http_code, exc.message)
    return page(
        request,
        "error.html",
        status=exc.http_code,
        title="Error",
        error=exc,
        trace_id=request.get(TRACE_ID),
    )


async def read_form(request: web.Request) -> Mapping[str, object]:
    """The POSTed form (read once; handlers' `request.post()` get it again from aiohttp's cache);
    one past BRIDGE_MAX_BODY_BYTES is a 413 page."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            "the form is larger than BRIDGE_MAX_BODY_BYTES allows",
            description="send fewer or smaller items",
        ) from None


def signed_in(handler: Page, *, cross_workflow: bool = True) -> Page:
    """The page behind a session. `cross_workflow`: it shows or acts across workflows, so a
    session of a workflow-limited credential gets 403."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        session = request.app[SESSIONS].find(request.cookies.get(COOKIE))
        if session is None:
            if request.method in ("GET", "HEAD"):
                return redirect(f"/admin/ui/login?next={quote(request.path_qs, safe='/')}")
            return error_page(
                request, Forbidden("sign in first", description="your session has ended")
            )
        request[SESSION] = session
        # The newest event before the page reads anything: its stream resumes after it.
        request[EVENTS_AFTER] = request.app[EVENTS].last_id
        request[PRINCIPAL] = session.principal
        try:
            if request.method == "POST":
                refuse_cross_site(request)
                form = await read_form(request)
                token = form.get("csrf")
                if not isinstance(token, str) or not hmac.compare_digest(token, session.csrf):
                    raise Forbidden(
                        "the form's CSRF token is missing or stale",
                        description="reload the page and try again",
                    )
            if cross_workflow and session.principal.workflows is not None:
                raise Forbidden(
                    "this page shows every workflow; your token is limited to workflows",
                    description="sign in with a token without the 'workflows' claim",
                )
            return await handler(request)
        except BridgeError as exc:
            return error_page(request, exc)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_page(
                request,
                Internal(
                    "internal error",
                    description="the bridge's logs tell more under trace id "
                    f"{request.get(TRACE_ID)}",
                ),
            )

    return guarded


def refuse_cross_site(request: web.Request) -> None:
    """A second wall behind the CSRF token and the SameSite cookie: a POST a browser says came
    from another site (`Sec-Fetch-Site`, `Origin`) is refused."""
    site = request.headers.get("Sec-Fetch-Site")
    # "null": a sandboxed frame's, or a form that came through a cross-site redirect. (A page
    # with `Referrer-Policy: no-referrer` sends it for its own forms too: the console's pages
    # are `same-origin`, so that their forms say where they come from.)
    origin = request.headers.get("Origin")
    if site not in (None, "same-origin", "none") or (
        origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host)
    ):
        raise Forbidden(
            "this form was sent from another site",
            description="use the console's own pages",
        )


_NEXT = re.compile(r"/admin/ui/[A-Za-z0-9_\-./?=&%]*").fullmatch
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$|\?)")


def safe_next(target: str | None, *, limited: bool = False) -> str:
    """Where to go after signing in: a console path of plain characters only (no dot segment
    that would climb out of it), never another site; for a session of a workflow-limited
    token, the Jobs page rather than the overview it may not see."""
    home = "/admin/ui/jobs" if limited else "/admin/ui/"
    if (
        target
        and target not in ("/admin/ui/", "/admin/ui/logout")  # no page to GET
        and _NEXT(target)
        # Browsers read %2e as a dot in a path: "%2e%2e" climbs as ".." does.
        and not _DOT_SEGMENT.search(unquote(target))
    ):
        return target
    return home
