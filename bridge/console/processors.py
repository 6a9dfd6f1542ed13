"""Processors: each one's description, options and parameter schema, and a "try it" form that
runs it on sample items as a sync POST /api/v1/workflow/execute runs them
(`bridge.api.execute.run_items`): the same checks, limits on size and time, and record (a sync
job of the workflow `console`, or of the workflow named in the form, which a session of a
workflow-limited token must name)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from bridge.api.access import limit_of
from bridge.api.body import check_structure, parse_json
from bridge.api.execute import run_items
from bridge.api.processors import described
from bridge.console.render import page, text_field
from bridge.errors import BridgeError, NotFound, cut_short
from bridge.keys import REGISTRY, SETTINGS
from bridge.processors.registry import ProcessorSpec

WORKFLOW = "console"  # the workflow of a try-it run, unless the form names one
SAMPLE = {"items": '[{"json": {"name": "Ada"}}]', "parameters": "{}", "workflow_id": ""}
SHOWN_CHARS = 20_000  # of the output items' JSON on the page; the rest is cut, marked
# Of what was typed into a field, shown again on the page after a run: past this, the field
# comes back empty with a note of the size (a 10 MB paste would make a 10 MB page).
SHOWN_AGAIN_BYTES = 256 * 1024
SHOWN_ERRORS = 100
# Built-in processors that act on the world: their form says what a try does, and asks first.
SIDE_EFFECTS = {
    "email_send": "sends real e-mail, through the SMTP server the bridge is configured with",
    "n8n_trigger": "calls the n8n webhook it is given, which starts that workflow",
}


def _options(spec: ProcessorSpec) -> list[str]:
    """The options worth saying, in words."""
    said = ["batch" if spec.batch else "per item", "async" if spec.is_async else "sync"]
    if spec.cpu_bound:
        said.append("CPU-bound (process pool)")
    if spec.timeout_s is not None:
        said.append(f"timeout {spec.timeout_s:g} s")
    if spec.concurrency is not None:
        said.append(f"at most {spec.concurrency} jobs at once")
    if spec.item_concurrency > 1:
        said.append(f"{spec.item_concurrency} items at once")
    if spec.max_attempts is not None:
        said.append(f"at most {spec.max_attempts} attempts")
    return said


async def processors(request: web.Request) -> web.StreamResponse:
    return page(
        request,
        "processors.html",
        title="Processors",
        processors=[(described(spec), _options(spec)) for spec in request.app[REGISTRY]],
        side_effects=SIDE_EFFECTS,
    )


def _spec(request: web.Request) -> ProcessorSpec:
    name = request.match_info["name"]
    registry = request.app[REGISTRY]
    if name not in registry.names():
        raise NotFound(f"no processor {name!r}")
    return registry.get(name)


def _page(
    request: web.Request,
    spec: ProcessorSpec,
    values: dict[str, str],
    *,
    status: int = 200,
    error: BridgeError | None = None,
    outcome: dict[str, Any] | None = None,
) -> web.Response:
    sizes = {name: len(value.encode()) for name, value in values.items()}
    not_shown = {name: size for name, size in sizes.items() if size > SHOWN_AGAIN_BYTES}
    return page(
        request,
        "processor.html",
        status=status,
        title=f"Processor {spec.name}",
        spec=spec,
        options=_options(spec),
        schema=orjson.dumps(spec.parameters_schema(), option=orjson.OPT_INDENT_2).decode(),
        side_effect=SIDE_EFFECTS.get(spec.name),
        values={name: "" if name in not_shown else value for name, value in values.items()},
        not_shown=not_shown,
        default_workflow=_default_workflow(request),
        error=error,
        outcome=outcome,
    )


def _default_workflow(request: web.Request) -> str | None:
    """`console`; none for a session of a workflow-limited token, which must name its own."""
    return WORKFLOW if limit_of(request) is None else None


async def processor(request: web.Request) -> web.StreamResponse:
    return _page(request, _spec(request), SAMPLE)


def _json(text: str, name: str, limit: int) -> Any:
    """A textarea's JSON, bounded as a request body is."""
    raw = text.encode()
    check_structure(raw, limit)
    return parse_json(raw, name)


async def try_processor(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    form = await request.post()
    values = {name: text_field(form, name) for name in SAMPLE}
    limit = request.app[SETTINGS].max_body_bytes
    try:
        body = {
            "processing_type": spec.name,
            # A limited session names a workflow of its own; without one the run is refused.
            "workflow_id": values["workflow_id"] or _default_workflow(request),
            "node": "console",
            "items": _json(values["items"], "items", limit),
            "parameters": _json(values["parameters"], "parameters", limit),
        }
        result, encoded, errors = await run_items(request, body)
    except BridgeError as exc:
        return _page(request, spec, values, status=exc.http_code, error=exc)
    outputs = orjson.loads(encoded)
    outcome = {
        "job": result.job,
        "count": len(outputs),
        "items": cut_short(orjson.dumps(outputs, option=orjson.OPT_INDENT_2).decode(), SHOWN_CHARS),
        "errors": [error.to_dict() for error in errors[:SHOWN_ERRORS]],
        "error_count": len(errors),
    }
    return _page(request, spec, values, outcome=outcome)
