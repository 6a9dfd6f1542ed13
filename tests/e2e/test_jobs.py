"""Background jobs by hand, inside a real n8n (1.123 and 2.x): Submit Job → Get Job Status →
Cancel Job in one workflow, on a job that is still running; and Get Job Status of a job that has
finished, which gives its items.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Env, World, bridge_headers
from tests.e2e.workflow import BRIDGE, CODE, WAIT, Workflow, items_code, parameters_json

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

RUNNING_S = 120  # far longer than the test: the job ends only by being cancelled


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    cancel = Workflow("e2eJobCancel", webhook="e2e-job-cancel")
    cancel.add("Items", CODE, jsCode=items_code([{"n": 0}, {"n": 1}]))
    cancel.add(
        "Submit",
        BRIDGE,
        operation="submit",
        processingType="sleep",
        parametersJson=parameters_json({"seconds": RUNNING_S}),
    )
    cancel.add("Status", BRIDGE, operation="getStatus")  # Job ID: {{ $json.job_id }}
    cancel.add("Cancel", BRIDGE, operation="cancel")
    cancel.chain("Webhook", "Items", "Submit", "Status", "Cancel")

    finished = Workflow("e2eJobFinished", webhook="e2e-job-finished")
    finished.add("Items", CODE, jsCode=items_code([{"n": n} for n in range(3)]))
    finished.add(
        "Submit",
        BRIDGE,
        operation="submit",
        processingType="repeat",
        parametersJson=parameters_json({"times": 2}),
    )
    # An n8n Wait of seconds sleeps in the execution: the job (milliseconds) is done by then.
    finished.add(
        "Later",
        WAIT,
        webhookId="0e2e0000-0000-4000-8000-00000000a17e",
        resume="timeInterval",
        amount=3,
        unit="seconds",
    )
    finished.add("Status", BRIDGE, operation="getStatus")
    finished.chain("Webhook", "Items", "Submit", "Later", "Status")
    return [cancel.document(), finished.document()]


async def job(world: World, job_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{world.bridge.url}/api/v1/workflow/status/{job_id}", headers=bridge_headers()
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]


async def test_submit_get_status_and_cancel_a_running_job(world: World) -> None:
    run = await world.run("e2e-job-cancel")
    assert run.status == "success", run.error
    [submitted] = run.output("Submit")
    assert submitted["pairedItem"] == [{"item": 0}, {"item": 1}]  # one job for every input
    job_id = submitted["json"]["job_id"]
    assert submitted["json"]["created"] is True
    [status] = run.json("Status")
    assert status["job_id"] == job_id
    assert status["workflow_id"] == "e2eJobCancel"
    assert status["status"] in ("queued", "running")
    assert "items" not in status  # nothing to give yet
    [cancelled] = run.output("Cancel")
    assert cancelled["pairedItem"] == {"item": 0}
    assert (cancelled["json"]["job_id"], cancelled["json"]["status"]) == (job_id, "cancelled")
    # Cancelled for good: the bridge says so after the workflow, long before the sleep would end.
    record = await job(world, job_id)
    assert record["status"] == "cancelled"
    assert record["finished_at"] - record["created_at"] < RUNNING_S / 2


async def test_get_status_of_a_finished_job_gives_its_items(world: World) -> None:
    run = await world.run("e2e-job-finished")
    assert run.status == "success", run.error
    [submitted] = run.json("Submit")
    [status] = run.json("Status")
    assert (status["job_id"], status["status"]) == (submitted["job_id"], "completed")
    assert status["items"] == [
        {"json": {"n": n, "copy": copy}, "pairedItem": {"item": n}}
        for n in range(3)
        for copy in range(2)
    ]
