"""The console's route table, under /admin/ui/ (BRIDGE_CONSOLE=false leaves it out)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from bridge.api.routes import PATH_PATTERNS
from bridge.console import (
    dead_letters,
    drain,
    jobs,
    live,
    overview,
    processors,
    signin,
    subscriptions,
)
from bridge.console.guard import Page, error_page, signed_in
from bridge.console.render import redirect, security_headers
from bridge.console.sessions import SESSIONS, Sessions
from bridge.console.throttle import SignInThrottle
from bridge.errors import NotFound
from bridge.keys import AUTH, SETTINGS

PREFIX = "/admin/ui"
STATIC = resources.files("bridge.console") / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}

# Ids in paths have the JSON API's shapes: anything else is no page (404).
_LETTER = f"{{letter_id:{PATH_PATTERNS['letter_id']}}}"
_SUBSCRIPTION = f"{{subscription_id:{PATH_PATTERNS['subscription_id']}}}"
_JOB = f"{{job_id:{PATH_PATTERNS['job_id']}}}"

# (method, path below PREFIX, page, shows or acts across workflows)
PAGES: tuple[tuple[str, str, Page, bool], ...] = (
    ("GET", "/", overview.overview, True),
    ("GET", "/jobs", jobs.job_list, False),
    ("GET", f"/jobs/{_JOB}", jobs.job_page, False),
    ("POST", f"/jobs/{_JOB}/cancel", jobs.cancel, False),
    ("POST", f"/jobs/{_JOB}/retry", jobs.retry, True),
    ("POST", "/logout", signin.logout, False),
    ("GET", "/events", live.events, False),
    ("GET", "/dead-letters", dead_letters.dead_letters, True),
    ("POST", "/dead-letters/replay", dead_letters.replay_all, True),
    ("POST", f"/dead-letters/{_LETTER}/replay", dead_letters.replay_one, True),
    ("GET", "/subscriptions", subscriptions.subscriptions, True),
    ("POST", "/subscriptions", subscriptions.create, True),
    ("POST", f"/subscriptions/{_SUBSCRIPTION}/delete", subscriptions.delete, True),
    ("GET", "/processors", processors.processors, False),
    ("GET", "/processors/{name}", processors.processor, False),
    ("POST", "/processors/{name}/try", processors.try_processor, False),
    ("GET", "/drain", drain.drain_page, True),
    ("POST", "/drain", drain.act, True),
)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    asset = STATIC / name
    if suffix not in STATIC_TYPES or not asset.is_file():
        return error_page(request, NotFound(f"no console asset {name!r}"))
    return web.Response(body=asset.read_bytes(), content_type=STATIC_TYPES[suffix])


async def to_overview(request: web.Request) -> web.StreamResponse:
    return redirect(PREFIX + "/")


async def not_found(request: web.Request) -> web.StreamResponse:
    return error_page(request, NotFound(f"no console page {request.path}"))


def add_console(app: web.Application) -> None:
    app[SESSIONS] = Sessions(app[AUTH], app[SETTINGS].console_session_ttl_s)
    app[signin.THROTTLE] = SignInThrottle()
    app[live.OPEN] = {}
    app.on_response_prepare.append(security_headers)
    router = app.router
    router.add_get(PREFIX + "/login", signin.login_form)
    router.add_post(PREFIX + "/login", signin.login)
    router.add_get(PREFIX + "/static/{name:[a-z0-9-]+\\.[a-z]+}", static)
    for method, path, handler, cross_workflow in PAGES:
        guarded = signed_in(handler, cross_workflow=cross_workflow)
        # A GET page answers HEAD too, as every GET of the API does (aiohttp sends no body).
        for each in (method, "HEAD") if method == "GET" else (method,):
            router.add_route(each, PREFIX + path, guarded)
    router.add_get(PREFIX, to_overview)
    # Unknown pages too are behind the sign-in: which pages exist is no one else's business.
    router.add_route("*", PREFIX + "/{tail:.*}", signed_in(not_found, cross_workflow=False))
