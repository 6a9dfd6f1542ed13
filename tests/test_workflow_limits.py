"""Tokens limited to workflows (the `workflows` claim): every read, write, event stream and
subscription is filtered by it; cross-workflow operations are refused. On both backends."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.auth import mint_token
from bridge.ids import new_id
from bridge.settings import Settings
from tests.conftest import ClientFactory
from tests.test_events import read_events
from tests.test_worker import finished
from tests.webhook_target import Target, json_of

EXECUTE = "/api/v1/workflow/execute"


def limited(settings: Settings, scopes: str, *workflows: str) -> dict[str, str]:
    """Headers of a JWT with `scopes`, limited to `workflows`."""
    token = mint_token(settings, scopes.split(","), 300, workflows=list(workflows))
    return {"Authorization": f"Bearer {token}"}


def unlimited(settings: Settings, scopes: str = "execute,status,admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(settings, scopes.split(','), 300)}"}


def body(workflow_id: str | None, mode: str = "sync", **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"processing_type": "echo", "mode": mode, "items": [{"json": {}}]}
    if workflow_id is not None:
        values["workflow_id"] = workflow_id
    return {**values, **extra}


async def job_of(
    client: TestClient, headers: dict[str, str], workflow_id: str | None, mode: str = "sync"
) -> str:
    response = await client.post(EXECUTE, json=body(workflow_id, mode), headers=headers)
    assert response.status in (200, 202), await response.text()
    return str((await response.json())["job_id"])


async def test_execute_refuses_a_workflow_outside_the_limit_and_none(
    client: TestClient, settings: Settings
) -> None:
    team = limited(settings, "execute,status", "wf-a", "team-*")
    for path, shape in (
        ("/api/v1/workflow/execute", "items"),
        ("/api/v1/hybrid-processing", "data"),
    ):

        def request(workflow_id: str | None, shape: str = shape) -> dict[str, Any]:
            values = body(workflow_id)
            if shape == "data":
                values["data"] = [{}]
                del values["items"]
            return values

        assert (await client.post(path, json=request("wf-a"), headers=team)).status == 200
        assert (await client.post(path, json=request("team-7"), headers=team)).status == 200
        for outside in ("wf-b", "team", None):
            refused = await client.post(path, json=request(outside), headers=team)
            assert refused.status == 403, outside
            error = (await refused.json())["error"]
            assert error["code"] == "forbidden"
            assert error["details"][0]["pointer"] == "/workflow_id"
    listed = await client.get("/api/v1/status/wf-b", headers=unlimited(settings))
    assert (await listed.json())["jobs"] == []  # refused before anything was recorded


async def test_an_idempotency_key_of_another_workflow_hands_out_nothing(
    client: TestClient, settings: Settings
) -> None:
    key = f"shared-key-{new_id()}"
    theirs = await client.post(
        EXECUTE, json=body("wf-b", "async", idempotency_key=key), headers=unlimited(settings)
    )
    their_id = (await theirs.json())["job_id"]
    mine = await client.post(
        EXECUTE,
        json=body("wf-a", "async", idempotency_key=key),
        headers=limited(settings, "execute,status", "wf-a"),
    )
    assert mine.status == 409
    assert their_id not in await mine.text()


async def test_the_status_of_another_workflows_job_is_not_found(
    client: TestClient, settings: Settings
) -> None:
    everyone = unlimited(settings)
    theirs = await job_of(client, everyone, "wf-b")
    nobodys = await job_of(client, everyone, None)
    mine = await job_of(client, everyone, "wf-a")
    unknown = new_id()
    token = limited(settings, "status", "wf-a")
    assert (await client.get(f"/api/v1/workflow/status/{mine}", headers=token)).status == 200
    answers = {}
    for job_id in (theirs, nobodys, unknown):
        response = await client.get(f"/api/v1/workflow/status/{job_id}", headers=token)
        assert response.status == 404
        error = (await response.json())["error"]
        answers[job_id] = (error["message"].replace(job_id, "ID"), error["description"])
    assert len(set(answers.values())) == 1  # no oracle: another's job reads as an unknown one


async def test_the_jobs_of_another_workflow_cannot_be_listed(
    client: TestClient, settings: Settings
) -> None:
    everyone = unlimited(settings)
    await job_of(client, everyone, "wf-b")
    mine = await job_of(client, everyone, "wf-a")
    token = limited(settings, "status", "wf-a")
    own = await client.get("/api/v1/status/wf-a", headers=token)
    assert [j["job_id"] for j in (await own.json())["jobs"]] == [mine]
    refused = await client.get("/api/v1/status/wf-b", headers=token)
    assert refused.status == 403
    assert "wf-b" not in str((await refused.json())["error"]["details"])


async def test_another_workflows_job_cannot_be_cancelled(
    client: TestClient, settings: Settings
) -> None:
    everyone = unlimited(settings)
    slow = body("wf-b", "async", processing_type="sleep", parameters={"seconds": 30})
    their_id = (await (await client.post(EXECUTE, json=slow, headers=everyone)).json())["job_id"]
    token = limited(settings, "execute,status", "wf-a")
    refused = await client.delete(f"/api/v1/workflow/{their_id}", headers=token)
    assert refused.status == 404
    still = await client.get(f"/api/v1/workflow/status/{their_id}", headers=everyone)
    assert (await still.json())["status"] in ("queued", "running")
    mine = {**slow, "workflow_id": "wf-a"}
    my_id = (await (await client.post(EXECUTE, json=mine, headers=token)).json())["job_id"]
    cancelled = await client.delete(f"/api/v1/workflow/{my_id}", headers=token)
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    assert (await client.delete(f"/api/v1/workflow/{their_id}", headers=everyone)).status == 200


async def test_callbacks_with_a_limited_token_reach_only_its_workflows(
    client: TestClient, settings: Settings
) -> None:
    everyone = unlimited(settings)
    their_id = (
        await (await client.post(EXECUTE, json=body("wf-b", "async"), headers=everyone)).json()
    )["job_id"]
    await finished(client, everyone, their_id)
    token = limited(settings, "execute", "wf-a")
    report = {"status": "success", "job_id": their_id}
    refused = await client.post("/api/v1/callbacks/wf-b", json=report, headers=token)
    assert refused.status == 403
    # Under its own workflow, a report naming another's job is refused as one naming an unknown
    # job (tests/test_events.py::test_a_report_may_name_only_a_job_of_its_workflow).
    refused = await client.post("/api/v1/callbacks/wf-a", json=report, headers=token)
    assert refused.status == 422
    theirs = await client.get(f"/api/v1/workflow/status/{their_id}", headers=everyone)
    assert (await theirs.json())["reported"] is None


async def test_the_event_stream_shows_only_the_tokens_workflows(
    client: TestClient, settings: Settings
) -> None:
    everyone = unlimited(settings)
    token = limited(settings, "status", "wf-a")
    assert (await client.get("/api/v1/events?workflow_id=wf-b", headers=token)).status == 403
    for workflow_id in ("wf-b", None):  # in the log before the stream: replayed
        await job_of(client, everyone, workflow_id, "async")
    async with client.get("/api/v1/events?last_event_id=0", headers=token) as stream:
        for workflow_id in ("wf-b", None):  # live
            await job_of(client, everyone, workflow_id, "async")
        mine = await job_of(client, everyone, "wf-a", "async")
        events = await read_events(stream, 3)  # queued, started, completed
    assert {e["event"] for e in events} == {
        "workflow.queued",
        "workflow.started",
        "workflow.completed",
    }
    assert {(e["data"]["workflow_id"], e["data"]["job_id"]) for e in events} == {("wf-a", mine)}


async def test_a_limited_tokens_subscriptions_get_only_its_workflows_and_are_its_own(
    make_client: ClientFactory, settings: Settings, target: Target
) -> None:
    client = await make_client()
    everyone = unlimited(settings)
    mine = limited(settings, "admin", "wf-a")
    other = limited(settings, "admin", "wf-b")
    wanted = {"url": target.url("/mine"), "events": ["workflow.completed"]}
    outside = await client.post(
        "/api/v1/subscriptions", json={**wanted, "workflow_id": "wf-b"}, headers=mine
    )
    assert outside.status == 403
    created = await client.post("/api/v1/subscriptions", json=wanted, headers=mine)
    assert created.status == 201
    own = await created.json()
    assert own["workflows"] == ["wf-a"]
    theirs = await (
        await client.post(
            "/api/v1/subscriptions",
            json={**wanted, "url": target.url("/everyone")},
            headers=everyone,
        )
    ).json()
    await job_of(client, everyone, "wf-b", "async")
    await job_of(client, everyone, None, "async")
    my_job = await job_of(client, everyone, "wf-a", "async")
    await target.wait_for(4)  # everyone's subscription: three; mine: one
    await asyncio.sleep(0.2)
    delivered = [json_of(r) for r in target.received if r.path == "/mine"]
    assert [(e["workflow_id"], e["job_id"]) for e in delivered] == [("wf-a", my_job)]
    listed = await (await client.get("/api/v1/subscriptions", headers=mine)).json()
    assert [s["id"] for s in listed["subscriptions"]] == [own["id"]]
    assert (await (await client.get("/api/v1/subscriptions", headers=other)).json()) == {
        "subscriptions": []
    }
    for headers, subscription_id in ((mine, theirs["id"]), (other, own["id"])):
        path = f"/api/v1/subscriptions/{subscription_id}"
        assert (await client.get(path, headers=headers)).status == 404
        assert (await client.delete(path, headers=headers)).status == 404
    everyones = await (await client.get("/api/v1/subscriptions", headers=everyone)).json()
    assert len(everyones["subscriptions"]) == 2  # nothing was deleted
    path = f"/api/v1/subscriptions/{own['id']}"
    assert (await client.get(path, headers=mine)).status == 200
    assert (await client.delete(path, headers=mine)).status == 200


async def test_admin_operations_refuse_a_limited_token(
    client: TestClient, settings: Settings
) -> None:
    token = limited(settings, "admin", "wf-a")
    job_id = await job_of(client, unlimited(settings), "wf-a")
    letter_id = f"cb_{new_id()}"
    spec = await (await client.get("/api/v1/openapi.json")).json()
    for method, path in (
        ("GET", "/admin/status"),
        ("GET", "/admin/dead-letters"),
        ("POST", f"/admin/dead-letters/{letter_id}/replay"),
        ("POST", f"/admin/jobs/{job_id}/retry"),
        ("POST", "/admin/drain"),
        ("DELETE", "/admin/drain"),
    ):
        response = await client.request(method, path, headers=token)
        assert response.status == 403, path
        assert "limited to workflows" in (await response.json())["error"]["message"]
        spec_path = path.replace(letter_id, "{letter_id}").replace(job_id, "{job_id}")
        operation = spec["paths"][spec_path][method.lower()]
        assert "refused to a token limited to workflows" in operation["description"]
    assert (await client.get("/ready")).status == 200  # not drained


async def test_processors_are_listed_for_a_token_limited_to_no_workflow(
    client: TestClient, settings: Settings
) -> None:
    token = limited(settings, "status")  # `"workflows": []`: what the n8n credential test sends
    assert (await client.get("/api/v1/processors", headers=token)).status == 200
    assert (await client.get(f"/api/v1/workflow/status/{new_id()}", headers=token)).status == 404
