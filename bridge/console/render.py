"""Rendering console pages: Jinja2 templates from the package, autoescaped, with the security
headers every console answer carries. A request with `X-Console-Partial: 1` (the page's script
refreshing itself) gets only the page's `live` block."""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

import jinja2
import regex
from aiohttp import web
from markupsafe import Markup

from bridge import __version__
from bridge.console.sessions import Session
from bridge.keys import SETTINGS

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Sent to the console's own pages only (its URLs hold no secret), so that its forms carry
    # their Origin (a no-referrer page's forms send "null") and the cross-site check can read it.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PARTIAL_HEADER = "X-Console-Partial"
STATIC_PATH = "/admin/ui/static/"
SESSION: web.RequestKey[Session] = web.RequestKey("console_session")
EVENTS_AFTER: web.RequestKey[int] = web.RequestKey("console_events_after")


def _when(value: float | None) -> str:
    if value is None:
        return "—"
    moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: float | None) -> str:
    if value is None:
        return "—"
    return _duration(time.time() - value) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# Characters that change how text around them reads without being seen: format characters
# (bidirectional controls — U+202E turns "exe.txt" into "txt.exe" —, zero-width ones, the soft
# hyphen, tags), line and paragraph separators, spaces other than the plain one, and the
# fillers and variation selectors that draw nothing. Anything a workflow author sent — ids, item
# JSON, errors — may carry them to make one job look like another's: every value a page shows
# has them spelled out, as ⟨U+202E⟩. What goes back into a form's field is left as it was
# (`field`), so that sending the form again sends what was typed.
_HIDDEN = regex.compile(
    r"[\p{Cf}\p{Zl}\p{Zp}[\p{Zs}--[ ]]\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164"
    r"\uffa0\ufe00-\ufe0f\U000e0100-\U000e01ef]",
    regex.V1,
)


def _visible(value: Any) -> Any:
    """Jinja's finalize: a shown string with its hidden characters made visible."""
    if isinstance(value, str) and not isinstance(value, Markup) and _HIDDEN.search(value):
        return _HIDDEN.sub(lambda found: f"⟨U+{ord(found.group()):04X}⟩", value)
    return value


def _field(value: Any) -> Markup:
    """A form field's value, escaped but not spelled out: the form sends back what it got."""
    return Markup.escape(value)


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("bridge.console", "templates"),
    autoescape=True,
    finalize=_visible,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=_when, ago=_ago, duration=_duration, field=_field)


def page(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    title: str,
    **context: Any,
) -> web.Response:
    session = request.get(SESSION)
    context.update(
        title=title,
        version=__version__,
        color=request.app[SETTINGS].color,
        session=session,
        csrf=session.csrf if session else context.get("csrf", ""),
        limited=session is not None and session.principal.workflows is not None,
        flashes=session.pop_flashes() if session else [],
        path=request.path,
        events_after=request.get(EVENTS_AFTER, ""),
    )
    compiled = ENV.get_template(template)
    if request.headers.get(PARTIAL_HEADER) == "1" and "live" in compiled.blocks:
        text = "".join(compiled.blocks["live"](compiled.new_context(context)))
    else:
        text = compiled.render(context)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def text_field(form: Mapping[str, object], name: str) -> str:
    """A posted form's text field; "" when missing or not text (a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST, the browser GETs the page it is sent to."""
    return web.Response(status=303, headers={"Location": location})


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer under the console's path carries the headers, errors
    and static files too."""
    if request.path.startswith("/admin/ui"):
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith(STATIC_PATH) and response.status == 200:
            # The same for everyone, and small: kept five minutes.
            response.headers["Cache-Control"] = "private, max-age=300"
