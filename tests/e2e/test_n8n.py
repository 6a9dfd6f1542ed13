"""The example workflows and the nodes' workflow limits inside a real n8n — every test in 1.123 and
in 2.x — against a real bridge daemon.

The example workflows of workflows/ are imported (their URLs pointed at the local sink); the bulk
e-mail one runs with `n8n execute`, the server runs the long-job and the failed-jobs-trigger ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from bridge.auth import mint_token
from tests.e2e.conftest import SETTINGS, Env, World, bridge_headers
from tests.e2e.n8n import RUNTIMES
from tests.e2e.workflow import CREDENTIAL_ID

ROOT = Path(__file__).resolve().parents[2]

PROBE_ID = "bridgeProbeJobs"

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    examples = [
        example(name, env.sink_url)
        for name in ("bulk-email.json", "long-job-resume.json", "notify-failed-jobs.json")
    ]
    return [*examples, changed_contacts(examples[0]), await probe_workflow(env.bridge_url)]


CHANGED_ID = "bridgeBulkEmail2"


def changed_contacts(bulk: dict[str, Any]) -> dict[str, Any]:
    """The bulk e-mail example run again with a new contact at the top of its list."""
    workflow = orjson.loads(orjson.dumps(bulk))
    workflow["id"] = CHANGED_ID
    [contacts] = [n for n in workflow["nodes"] if n["name"] == "Contacts"]
    code = contacts["parameters"]["jsCode"]
    zed = "{ json: { first_name: 'Zed', to: 'zed@example.com', plan: 'pro' } },"
    contacts["parameters"]["jsCode"] = code.replace("return [", "return [\n  " + zed, 1)
    assert zed in contacts["parameters"]["jsCode"]
    return workflow  # type: ignore[no-any-return]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bulk_run(world: World) -> dict[str, Any]:
    return await asyncio.to_thread(world.n8n.execute, "bridgeBulkEmail1")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def changed_run(world: World, bulk_run: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(world.n8n.execute, CHANGED_ID)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def probe_run(world: World) -> dict[str, Any]:
    return await asyncio.to_thread(world.n8n.execute, PROBE_ID)


async def probe_workflow(bridge_url: str) -> dict[str, Any]:
    """A workflow whose Python Bridge nodes read a job of its own and one of another workflow
    (both made here, through the API, with an unlimited token)."""
    job_ids = []
    async with aiohttp.ClientSession() as session:
        for workflow_id in (PROBE_ID, "someone-else"):
            body = {"processing_type": "echo", "items": [{"json": {}}], "workflow_id": workflow_id}
            token = mint_token(SETTINGS, ["execute"], 300)
            async with session.post(
                f"{bridge_url}/api/v1/workflow/execute",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                job_ids.append((await response.json())["job_id"])

    def get_status(number: int, name: str, job_id: str) -> dict[str, Any]:
        return {
            "id": f"0a7b0d8e-0009-4b8e-9f5e-00000000000{number}",
            "name": name,
            "type": "CUSTOM.pythonBridge",
            "typeVersion": 1,
            "position": [220 * number, 0],
            "onError": "continueRegularOutput",
            "credentials": {
                "pythonBridgeApi": {"id": CREDENTIAL_ID, "name": "Python Bridge account"}
            },
            "parameters": {"operation": "getStatus", "jobId": job_id},
        }

    return {
        "id": PROBE_ID,
        "name": "Probe: jobs by id",
        "active": False,
        "settings": {"executionOrder": "v1"},
        "nodes": [
            {
                "id": "0a7b0d8e-0009-4b8e-9f5e-000000000000",
                "name": "Start",
                "type": "n8n-nodes-base.manualTrigger",
                "typeVersion": 1,
                "position": [0, 0],
                "parameters": {},
            },
            get_status(1, "Own job", job_ids[0]),
            get_status(2, "Other job", job_ids[1]),
        ],
        "connections": {
            "Start": {"main": [[{"node": "Own job", "type": "main", "index": 0}]]},
            "Own job": {"main": [[{"node": "Other job", "type": "main", "index": 0}]]},
        },
    }


def example(name: str, sink_url: str) -> dict[str, Any]:
    """A workflow of workflows/, for an n8n that loads the nodes from N8N_CUSTOM_EXTENSIONS
    (their types are CUSTOM.*) and posts to the local sink instead of example.com."""
    text = (ROOT / "workflows" / name).read_text()
    text = text.replace("n8n-nodes-python-bridge.", "CUSTOM.")
    text = text.replace("https://example.com/", f"{sink_url}/")
    return orjson.loads(text)  # type: ignore[no-any-return]


def node_output(run: dict[str, Any], node: str) -> list[dict[str, Any]]:
    [task] = run["data"]["resultData"]["runData"][node]
    assert task["executionStatus"] == "success", task
    return task["data"]["main"][0]  # type: ignore[no-any-return]


async def test_bulk_email_example_runs_with_n8n_execute(
    world: World, bulk_run: dict[str, Any]
) -> None:
    """Contacts → validation → template_render → email_send, run by `n8n execute --id`."""
    run = bulk_run
    assert run["status"] == "success", run["data"]["resultData"].get("error")
    validated = node_output(run, "Validate contacts")
    assert [i["json"]["validation"]["valid"] for i in validated] == [True, True]
    assert validated[0]["json"]["to"] == "Ada@example.com"  # normalised by the bridge
    assert [i["pairedItem"] for i in validated] == [{"item": 0}, {"item": 1}]
    # only the invalid contact went to the error output, and on to the report of refusals
    [refused] = node_output(run, "Invalid contacts")
    assert refused["json"]["to"] == "not-an-address"
    assert refused["json"]["reason"].startswith("/to: An email address must have an @-sign")
    rendered = node_output(run, "Render message")
    assert rendered[0]["json"]["text"].startswith("Hello Ada,")
    sent = node_output(run, "Send e-mail")
    assert [i["json"]["email"]["sent"] for i in sent] == [True, True]
    assert sorted(m["To"] for m in world.mail.messages) == ["Ada@example.com", "grace@example.com"]
    assert "your pro plan renews" in world.mail.messages[0].get_content() or (
        "your pro plan renews" in world.mail.messages[1].get_content()
    )


async def test_the_bulk_email_example_mails_each_contact_once_however_the_list_changes(
    world: World, bulk_run: dict[str, Any], changed_run: dict[str, Any]
) -> None:
    """Run again in the same month with a new contact at the top: only the new one is mailed —
    each item has its own key (the month and the address), not its position."""
    assert changed_run["status"] == "success", changed_run["data"]["resultData"].get("error")
    sent = {i["json"]["to"]: i["json"]["email"] for i in node_output(changed_run, "Send e-mail")}
    assert sent["zed@example.com"]["sent"] is True and not sent["zed@example.com"]["duplicate"]
    assert sent["Ada@example.com"]["duplicate"] and sent["grace@example.com"]["duplicate"]
    assert sorted(m["To"] for m in world.mail.messages) == [
        "Ada@example.com",
        "grace@example.com",
        "zed@example.com",
    ]


async def test_long_job_waits_and_is_resumed_by_the_callback(world: World) -> None:
    rows = [{"name": f"row {n}", "amount": n * 1.5} for n in range(3)]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{world.n8n.url}/webhook/bridge-long-job", json={"rows": rows}) as response,
    ):
        assert response.status == 200, await response.text()
    reports = await world.sink.wait("report", 3)
    assert [r["line"] for r in reports] == ["row 0: 0.00", "row 1: 1.50", "row 2: 3.00"]
    assert all(r["amount"] == rows[i]["amount"] for i, r in enumerate(reports))


def failed_jobs_trigger(subscriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The subscription of the failed-jobs example's trigger (other modules have triggers too)."""
    return [s for s in subscriptions if "n8n workflow bridgeFailNotify," in s["description"]]


async def test_trigger_subscribes_and_starts_on_a_failed_job(world: World) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{world.bridge.url}/api/v1/subscriptions", headers=bridge_headers()
        ) as response:
            subscriptions = (await response.json())["subscriptions"]
        [subscription] = failed_jobs_trigger(subscriptions)
        assert subscription["events"] == ["workflow.failed"]
        assert subscription["url"].startswith(f"{world.n8n.url}/webhook/")
        body = {
            "processing_type": "crash",
            "mode": "async",
            "items": [{"json": {}}],
            "workflow_id": "wf-e2e",
        }
        async with session.post(
            f"{world.bridge.url}/api/v1/workflow/execute", json=body, headers=bridge_headers()
        ) as response:
            job_id = (await response.json())["job_id"]
    # other modules' failed jobs alert too: this one's comes among them
    deadline = asyncio.get_running_loop().time() + 90
    while not (
        alerts := [a for a in world.sink.received.get("alerts", []) if a["job_id"] == job_id]
    ):
        assert asyncio.get_running_loop().time() < deadline, world.sink.received
        await asyncio.sleep(0.2)
    [alert] = alerts
    assert "the whole batch broke" in alert["text"]


async def test_trigger_refuses_an_unsigned_event(world: World) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{world.bridge.url}/api/v1/subscriptions", headers=bridge_headers()
        ) as response:
            [subscription] = failed_jobs_trigger((await response.json())["subscriptions"])
        forged = {"id": 1, "type": "workflow.failed", "job_id": "forged", "data": {}}
        async with session.post(subscription["url"], json=forged) as response:
            assert response.status == 401
            assert "not signed" in (await response.json())["message"]
    await asyncio.sleep(1)
    assert all(a["job_id"] != "forged" for a in world.sink.received.get("alerts", []))


async def test_the_node_reads_its_workflows_jobs_and_no_others(probe_run: dict[str, Any]) -> None:
    """The node's token is limited to the workflow it runs in: Get Job Status reads a job of that
    workflow, and another workflow's job is "no job" to it."""
    [own] = node_output(probe_run, "Own job")
    assert own["json"]["workflow_id"] == PROBE_ID and own["json"]["status"] == "completed"
    [other] = node_output(probe_run, "Other job")
    assert other["json"]["error"]["code"] == "not_found", other
    assert "no job" in other["json"]["message"], other


async def test_the_nodes_jobs_are_visible_only_to_tokens_of_their_workflow(
    world: World, bulk_run: dict[str, Any]
) -> None:
    """The jobs the node submitted are its workflow's: seen by a token limited to it, by no
    other."""
    workflow_id = "bridgeBulkEmail1"
    own = bridge_headers("status", [workflow_id])
    other = bridge_headers("status", ["bridgeLongJobWt1"])
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{world.bridge.url}/api/v1/status/{workflow_id}", headers=own
        ) as response:
            assert response.status == 200
            jobs = (await response.json())["jobs"]
        assert jobs and {job["workflow_id"] for job in jobs} == {workflow_id}
        status = f"{world.bridge.url}/api/v1/workflow/status/{jobs[0]['job_id']}"
        async with session.get(status, headers=own) as response:
            assert response.status == 200
        async with session.get(status, headers=other) as response:
            assert response.status == 404
        async with session.get(
            f"{world.bridge.url}/api/v1/status/{workflow_id}", headers=other
        ) as response:
            assert response.status == 403


async def test_the_versions_tested_are_the_ones_installed_and_named() -> None:
    """scripts/lib/n8n.sh installs the runtimes this suite runs in, and the READMEs name them."""
    script = (ROOT / "scripts" / "lib" / "n8n.sh").read_text()
    assert [r.version for r in RUNTIMES] == [
        line.split("=")[1]
        for line in script.splitlines()
        if line.startswith("N8N") and "_VERSION=" in line
    ]
    nodes_readme = (ROOT / "n8n-nodes" / "README.md").read_text()
    for runtime in RUNTIMES:
        assert f"n8n {runtime.version}" in nodes_readme
    readme = (ROOT / "README.md").read_text()
    assert "1.123" in readme and "2.41" in readme
