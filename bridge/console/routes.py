"""The console's route table, under /admin/ui/ (BRIDGE_CONSOLE=false leaves it out)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from bridge.api import events
from bridge.api.routes import PATH_PATTERNS
from bridge.console import jobs, overview, signin
from bridge.console.guard import Page, error_page, signed_in
from bridge.console.render import redirect, security_headers
from bridge.console.sessions import SESSIONS, Sessions
from bridge.errors import NotFound
from bridge.keys import AUTH, SETTINGS

PREFIX = "/admin/ui"
STATIC = resources.files("bridge.console") / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}

# (method, path below PREFIX, page, shows or acts across workflows)
PAGES: tuple[tuple[str, str, Page, bool], ...] = (
    ("GET", "/", overview.overview, True),
    ("GET", "/jobs", jobs.job_list, False),
    ("GET", f"/jobs/{{job_id:{PATH_PATTERNS['job_id']}}}", jobs.job_page, False),
    ("POST", f"/jobs/{{job_id:{PATH_PATTERNS['job_id']}}}/cancel", jobs.cancel, False),
    ("POST", f"/jobs/{{job_id:{PATH_PATTERNS['job_id']}}}/retry", jobs.retry, True),
    ("POST", "/logout", signin.logout, False),
    ("GET", "/events", events.stream, False),
)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    asset = STATIC / name
    if suffix not in STATIC_TYPES or not asset.is_file():
        return error_page(request, NotFound(f"no console asset {name!r}"))
    return web.Response(
        body=asset.read_bytes(),
        content_type=STATIC_TYPES[suffix],
        headers={"Cache-Control": "private, max-age=300"},
    )


async def to_overview(request: web.Request) -> web.StreamResponse:
    return redirect(PREFIX + "/")


async def not_found(request: web.Request) -> web.StreamResponse:
    return error_page(request, NotFound(f"no console page {request.path}"))


def add_console(app: web.Application) -> None:
    app[SESSIONS] = Sessions(app[AUTH], app[SETTINGS].console_session_ttl_s)
    app.on_response_prepare.append(security_headers)
    router = app.router
    router.add_get(PREFIX + "/login", signin.login_form)
    router.add_post(PREFIX + "/login", signin.login)
    router.add_get(PREFIX + "/static/{name:[a-z0-9-]+\\.[a-z]+}", static)
    for method, path, handler, cross_workflow in PAGES:
        router.add_route(method, PREFIX + path, signed_in(handler, cross_workflow=cross_workflow))
    router.add_get(PREFIX, to_overview)
    # Unknown pages too are behind the sign-in: which pages exist is no one else's business.
    router.add_route("*", PREFIX + "/{tail:.*}", signed_in(not_found, cross_workflow=False))
