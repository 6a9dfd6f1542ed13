"""What a workflow-limited credential may reach (the `workflows` claim, `bridge.workflow_limit`).

A workflow the caller names itself (a request's `workflow_id`, a path's, a filter's) outside its
limit is refused with 403: that tells nothing the caller did not know. A job or subscription the
caller names by id and may not see answers 404, word for word as an unknown id does, so that
ids cannot be probed for existence.
"""

from __future__ import annotations

from aiohttp import web

from bridge.auth import Principal
from bridge.errors import Forbidden
from bridge.keys import PRINCIPAL
from bridge.workflow_limit import WorkflowLimit


def limit_of(request: web.Request) -> WorkflowLimit | None:
    """The credential's limit; None when it reaches every workflow (or came by signature)."""
    principal = request.get(PRINCIPAL)
    return principal.workflows if principal is not None else None


def visible(request: web.Request, workflow_id: str | None) -> bool:
    limit = limit_of(request)
    return limit is None or limit.allows(workflow_id)


def require_workflow(request: web.Request, workflow_id: str | None, pointer: str) -> None:
    """403 unless the credential may act on `workflow_id` (a limited one needs one)."""
    require_within(limit_of(request), workflow_id, pointer)


def require_within(limit: WorkflowLimit | None, workflow_id: str | None, pointer: str) -> None:
    """`require_workflow` for a limit known otherwise (a console session's)."""
    if limit is None or limit.allows(workflow_id):
        return
    reason = (
        "a token limited to workflows must name one of them"
        if workflow_id is None
        else "outside the workflows this token is limited to"
    )
    raise Forbidden(
        f"{pointer.lstrip('/')}: {reason}",
        description=f"this token reaches the workflows {', '.join(limit.entries()) or '(none)'}",
        details=[{"pointer": pointer, "message": reason}],
    )


def refuse_limited(principal: Principal, path: str) -> None:
    """403 for a workflow-limited token on a route that acts across workflows."""
    if principal.workflows is not None:
        raise Forbidden(
            f"{path} acts across workflows; this token is limited to workflows",
            description="use a token without the 'workflows' claim",
        )
