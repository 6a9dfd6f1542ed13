"""The trigger's workflow filter inside a real n8n (1.123 and 2.x): a Python Bridge Trigger with
"Only for Workflow ID" starts its workflow on that workflow's events, and on no other's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import MONITOR_CREDENTIAL_ID, Env, World, bridge_headers
from tests.e2e.workflow import BRIDGE, CODE, NOOP, TRIGGER, Workflow, items_code, parameters_json

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

WATCHED = "e2eFilterWatched"
TRIGGERED = "e2eFilterTrigger"


def source(workflow_id: str, path: str) -> dict[str, Any]:
    """A workflow that submits one background job (its events carry `workflow_id`)."""
    wf = Workflow(workflow_id, webhook=path)
    wf.add("Items", CODE, jsCode=items_code([{"n": 0}]))
    wf.add(
        "Submit",
        BRIDGE,
        operation="submit",
        processingType="repeat",
        parametersJson=parameters_json({"times": 1}),
    )
    wf.chain("Webhook", "Items", "Submit")
    return wf.document()


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    trigger = Workflow(TRIGGERED)
    # An operator's credential: one limited to its own workflow could not watch another.
    trigger.add(
        "Trigger",
        TRIGGER,
        events=["workflow.completed"],
        workflowId=WATCHED,
        credentials={"pythonBridgeApi": {"id": MONITOR_CREDENTIAL_ID, "name": "monitor"}},
    )
    trigger.add("Seen", NOOP)
    trigger.chain("Trigger", "Seen")
    return [
        source(WATCHED, "e2e-filter-watched"),
        source("e2eFilterOther", "e2e-filter-other"),
        trigger.document(),
    ]


async def test_the_trigger_starts_only_on_its_workflows_events(world: World) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{world.bridge.url}/api/v1/subscriptions", headers=bridge_headers()) as got,
    ):
        subscriptions = (await got.json())["subscriptions"]
    [subscription] = [s for s in subscriptions if f"n8n workflow {TRIGGERED}," in s["description"]]
    assert (subscription["workflow_id"], subscription["events"]) == (
        WATCHED,
        ["workflow.completed"],
    )

    before = world.n8n.newest_execution_id()
    other = await world.run("e2e-filter-other")
    watched = await world.run("e2e-filter-watched")
    assert (other.status, watched.status) == ("success", "success")
    [other_job] = [item["job_id"] for item in other.json("Submit")]
    [watched_job] = [item["job_id"] for item in watched.json("Submit")]

    started = await world.n8n.execution(before, TRIGGERED)
    assert started.status == "success", started.error
    [event] = started.json("Trigger")
    assert (event["type"], event["workflow_id"], event["job_id"]) == (
        "workflow.completed",
        WATCHED,
        watched_job,
    )
    # The other workflow's job completed first: its event, were it sent, would have come too.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{world.bridge.url}/api/v1/workflow/status/{other_job}", headers=bridge_headers()
        ) as got,
    ):
        assert (await got.json())["status"] == "completed"
    await asyncio.sleep(3)
    assert world.n8n.execution_ids(before, TRIGGERED) == [started.id]
