"""POST /api/v1/callbacks/{workflow_id}: n8n reports the outcome of a workflow the bridge
started (with the `n8n_trigger` processor). Verified by a Standard Webhooks signature
(BRIDGE_CALLBACK_SECRET) or a JWT / API key with the execute scope; a repeated `webhook-id`
changes nothing (a signed one whatever path it comes to). A report names no job, or a job of
the path's workflow (422 otherwise, for every caller); a workflow-limited token reports only
under its workflows."""

from __future__ import annotations

import re

import orjson
from aiohttp import web

from bridge.api.access import require_workflow
from bridge.api.body import json_response, read_model
from bridge.api.models import WEBHOOK_ID, IncomingCallback
from bridge.auth import authorize, challenge
from bridge.errors import AuthenticationFailed, PayloadTooLarge, ValidationFailed
from bridge.items import MAX_JSON_DEPTH
from bridge.jobs import JobRecord
from bridge.keys import AUTH, EVENTS, OUTBOX, PRINCIPAL, SETTINGS, SIGNER, STORE

_WEBHOOK_ID = re.compile(WEBHOOK_ID["schema"]["pattern"])


async def receive(request: web.Request) -> web.Response:
    webhook_id = request.headers.get("webhook-id")
    if webhook_id is not None and not (
        0 < len(webhook_id) <= WEBHOOK_ID["schema"]["maxLength"] and _WEBHOOK_ID.match(webhook_id)
    ):
        raise ValidationFailed(
            f"webhook-id must be 1 to 256 visible ASCII characters, not {webhook_id[:40]!r}",
            details=[{"pointer": "/headers/webhook-id", "message": "not a webhook id"}],
        )
    signed = "webhook-signature" in request.headers
    if signed:
        signer = request.app[SIGNER]
        if not signer.enabled:
            raise AuthenticationFailed(
                "signed callbacks need BRIDGE_CALLBACK_SECRET on the bridge; send a JWT instead",
                headers=challenge(),
            )
        if not signer.verify(await request.read(), dict(request.headers)):
            raise AuthenticationFailed(
                "the webhook signature does not match (or webhook-timestamp is more than 5 "
                "minutes off)",
                description="sign `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 "
                "and the whsec_ key of BRIDGE_CALLBACK_SECRET",
                headers=challenge(),  # RFC 9110: every 401 says how to authenticate
            )
    else:
        principal = request.app[AUTH].authenticate(request.headers)
        authorize(principal, "execute")
        request[PRINCIPAL] = principal
    body = await read_model(request, IncomingCallback)
    _check_size(body, request.app[SETTINGS].max_report_bytes)
    workflow_id = request.match_info["workflow_id"]
    require_workflow(request, workflow_id, "/path/workflow_id")
    job = await _job_of(request, workflow_id, body.job_id)  # before the webhook-id is used up
    # A signed report is seen once, whatever path it is sent to (the signature does not cover
    # the path: it could be replayed to every workflow's). One with a token is seen per
    # workflow: whoever may report for one cannot use up another's webhook-ids. A workflow id
    # holds no control character, so the separator cannot be forged.
    seen_as = f"\x1fsigned\x1f{webhook_id}" if signed else f"{workflow_id}\x1f{webhook_id}"
    if webhook_id and not await request.app[OUTBOX].first_time(seen_as):
        return json_response({"accepted": True, "duplicate": True})
    if job is not None:
        await request.app[STORE].save_report(job.job_id, orjson.dumps(body.model_dump(mode="json")))
    failed = body.status in ("failed", "error")
    request.app[EVENTS].publish(
        "workflow.failed" if failed else "workflow.completed",
        job_id=body.job_id,
        workflow_id=workflow_id,
        execution_id=body.execution_id,
        data={"source": "n8n", "status": body.status, "error": body.error, "data": body.data},
    )
    return json_response({"accepted": True, "duplicate": False})


def _check_size(body: IncomingCallback, limit: int) -> None:
    """413 when `data` or `error` takes more than `limit` bytes as JSON: a report is kept on its
    job and in the event log for days, and sent to every event stream and subscription; 422
    when it cannot be written as JSON at all."""
    for field in ("data", "error"):
        try:
            size = len(orjson.dumps(getattr(body, field)))
        except TypeError:  # the parser takes deeper JSON than the bridge can write back
            raise ValidationFailed(
                f"{field}: nested more than {MAX_JSON_DEPTH} levels deep",
                details=[{"pointer": f"/{field}", "message": "nested too deeply"}],
            ) from None
        if size > limit:
            raise PayloadTooLarge(
                f"{field}: {size} bytes as JSON, more than BRIDGE_MAX_REPORT_BYTES ({limit})",
                description="report a summary; the bridge keeps reports in its event log",
                details=[{"pointer": f"/{field}", "message": f"more than {limit} bytes"}],
            )


async def _job_of(request: web.Request, workflow_id: str, job_id: str | None) -> JobRecord | None:
    """The job a report names, which must be one of the path's workflow: whoever reports (a
    signature, any token), an event saying "this job failed" may not claim another workflow's
    job. Another's and an unknown one are refused in the same words, so ids cannot be probed."""
    if job_id is None:
        return None
    job = await request.app[STORE].get(job_id)
    if job is None or job.workflow_id != workflow_id:
        raise ValidationFailed(
            f"job_id: no job {job_id!r} in workflow {workflow_id!r}",
            description="a report names a job the bridge started for the workflow of its path",
            details=[{"pointer": "/job_id", "message": "no job of this workflow"}],
        )
    return job
