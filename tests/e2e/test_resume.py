"""Execute in Background and Wait inside a real n8n (1.123 and 2.x): the resume URL the node gives
the bridge (2.x signs it: `/webhook-waiting/ID?signature=…`), n8n's 409 "is running already" when
a callback comes before the wait is saved — retried by the bridge on its schedule, the execution
resumed once with the job's items — and resume calls that are not the bridge's, refused.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.webhooks import Signer
from tests.e2e.conftest import (
    CALLBACK_SECRET,
    UNSIGNED_CREDENTIAL_ID,
    Env,
    World,
    bridge_headers,
)
from tests.e2e.n8n import Execution
from tests.e2e.workflow import (
    BRIDGE,
    CODE,
    NOOP,
    SET,
    Workflow,
    items_code,
    parameters_json,
    set_fields,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

RACE = "e2eResumeRace"
RUNNING = "e2eResumeRunning"
FORGED = "e2eResumeForged"
UNSIGNED = "e2eResumeUnsigned"
UNSIGNED_OUT = "e2eResumeUnsignedOut"
LOOP = "e2eResumeLoop"
JOB_S = 8  # the forged test's job: long enough to try the resume URL while n8n waits


def waiting(workflow_id: str, path: str, *before: tuple[str, str, dict[str, Any]]) -> Workflow:
    """Webhook → `before` nodes → Items (3) → Wait for job (repeat, 2 each) → After."""
    wf = Workflow(workflow_id, webhook=path)
    for name, node_type, parameters in before:
        wf.add(name, node_type, **parameters)
    wf.add("Items", CODE, jsCode=items_code([{"n": n} for n in range(3)]))
    wf.add(
        "Wait for job",
        BRIDGE,
        operation="executeAndWait",
        processingType="repeat",
        parametersJson=parameters_json({"times": 2}),
    )
    wf.add("After", NOOP)
    wf.chain("Webhook", *(name for name, _, _ in before), "Items", "Wait for job", "After")
    return wf


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    # Items in the run data that n8n writes when the execution starts waiting: the write takes
    # a while, and the bridge's callback of a job of milliseconds comes before it is done.
    ballast = (
        "Ballast",
        CODE,
        {"jsCode": "return Array.from({ length: 3000 }, (_, n) => ({ json: { n } }));"},
    )
    # A node that holds the execution running for seconds before the job is submitted.
    slow = (
        "Slow",
        BRIDGE,
        {
            "operation": "execute",
            "processingType": "sleep",
            "parametersJson": parameters_json({"seconds": 6}),
        },
    )
    forged = Workflow(FORGED, webhook="e2e-resume-forged")
    forged.add("Items", CODE, jsCode=items_code([{"n": n, "label": f"input {n}"} for n in (0, 1)]))
    forged.add(
        "Wait for job",
        BRIDGE,
        operation="executeAndWait",
        processingType="sleep",
        parametersJson=parameters_json({"seconds": JOB_S}),
    )
    # One output per input: the node after the wait reads each one's input through pairedItem.
    forged.add("After", SET, **set_fields(label="={{ $('Items').item.json.label }}"))
    forged.chain("Webhook", "Items", "Wait for job", "After")
    unsigned = waiting(UNSIGNED, "e2e-resume-unsigned")
    unsigned.nodes[-2]["credentials"] = {
        "pythonBridgeApi": {"id": UNSIGNED_CREDENTIAL_ID, "name": "no callback secret"}
    }
    unsigned_out = waiting(UNSIGNED_OUT, "e2e-resume-unsigned-out")
    unsigned_out.nodes[-2]["credentials"] = unsigned.nodes[-2]["credentials"]
    unsigned_out.nodes[-2]["onError"] = "continueErrorOutput"
    # Loop Over Items, one item a round: the waiting node runs once per round.
    loop = Workflow(LOOP, webhook="e2e-resume-loop")
    loop.add("Items", CODE, jsCode=items_code([{"n": n} for n in range(3)]))
    loop.add("Loop", "n8n-nodes-base.splitInBatches", typeVersion=3, batchSize=1, options={})
    loop.add(
        "Wait for job",
        BRIDGE,
        operation="executeAndWait",
        processingType="repeat",
        parametersJson=parameters_json({"times": 1}),
    )
    loop.add("Done", NOOP)
    loop.chain("Webhook", "Items", "Loop")
    loop.wire("Loop", "Done", output=0).wire("Loop", "Wait for job", output=1)
    loop.wire("Wait for job", "Loop")
    return [
        loop.document(),
        unsigned.document(),
        unsigned_out.document(),
        waiting(RACE, "e2e-resume-race", ballast).document(),
        waiting(RUNNING, "e2e-resume-running", slow).document(),
        forged.document(),
    ]


REPEATED = [{"n": n, "copy": copy} for n in range(3) for copy in range(2)]


def assert_resumed_once(execution: Execution, outputs: list[dict[str, Any]]) -> None:
    """Ended well with the job's items, and the node after the wait ran once. n8n pairs what a
    resumed node puts out with that node's inputs by position, whatever the node says (both
    versions rewrite every input item's pairedItem before running a node)."""
    assert execution.status == "success", execution.error
    assert len(execution.run_data["Wait for job"]) == 1
    assert execution.json("Wait for job") == outputs
    assert execution.paired("Wait for job") == list(range(len(outputs)))
    assert len(execution.run_data["After"]) == 1
    assert execution.json("After") == outputs


async def jobs_of(world: World, workflow_id: str, execution_id: int) -> list[dict[str, Any]]:
    """The background jobs an execution submitted."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{world.bridge.url}/api/v1/status/{workflow_id}",
            params={"execution_id": str(execution_id)},
            headers=bridge_headers(),
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return [job for job in (await response.json())["jobs"] if job["mode"] == "async"]


async def callback_attempts(world: World) -> dict[str, float]:
    """The bridge's count of callback attempts, by outcome (its /metrics)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{world.bridge.url}/metrics") as response,
    ):
        text = await response.text()
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "bridge_webhook_attempts_total" and sample.labels["kind"] == "callback"
    }


def signed(body: dict[str, Any], secret: str = CALLBACK_SECRET) -> tuple[bytes, dict[str, str]]:
    """A callback body and the headers the bridge signs it with (Standard Webhooks)."""
    content = orjson.dumps(body)
    headers = Signer(secret).headers(f"msg_{uuid.uuid4().hex}", content)
    return content, {**headers, "Content-Type": "application/json"}


def forged_callback() -> dict[str, Any]:
    return {"job_id": "forged", "status": "completed", "items": [{"json": {"forged": True}}]}


async def post(url: str, content: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=content, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_the_bridge_retries_n8ns_409_and_the_execution_resumes_once(world: World) -> None:
    """The job is done before n8n has saved the wait: n8n answers the callback 409 "is running
    already", the bridge tries again on its schedule, and the execution resumes once. The race
    is n8n's to lose; a few runs make sure it was seen."""
    counted = await callback_attempts(world)
    attempts = []
    for _ in range(6):
        before = world.n8n.newest_execution_id()
        started = await world.run("e2e-resume-race")
        assert world.n8n.execution_ids(before, RACE) == [started.id]
        assert_resumed_once(await world.n8n.settled(started.id), REPEATED)
        [job] = await jobs_of(world, RACE, started.id)
        callback = job["callback"]
        assert (job["status"], callback["state"]) == ("completed", "delivered")
        # The node gave the bridge the resume URL; 2.x's carries its token (shown redacted).
        # The node gave the bridge the resume URL with its tag (and 2.x's token): shown redacted.
        assert callback["url"].endswith(f"/webhook-waiting/{started.id}?***")
        attempts.append(callback["attempts"])
        if callback["attempts"] > 1:
            break
    assert max(attempts) > 1, f"no callback came before n8n saved the wait: {attempts}"
    now = await callback_attempts(world)
    # Every attempt that did not resume was a 409 "is running already", none "finished".
    assert now["not_ready"] - counted["not_ready"] == sum(a - 1 for a in attempts)
    assert now["delivered"] - counted["delivered"] == len(attempts)
    assert now["finished"] == counted["finished"]


async def test_n8n_answers_409_while_the_execution_runs_and_nothing_changes(
    world: World,
) -> None:
    """A correctly signed callback to the resume URL while the execution still runs (a node
    before the wait is busy) is answered 409 "is running already": what the bridge retries."""
    before = world.n8n.newest_execution_id()
    run = asyncio.create_task(world.run("e2e-resume-running"))
    execution_id = await world.n8n.running(before, RUNNING)
    url = world.n8n.resume_url(world.n8n.read(execution_id))
    status, text = await post(url, *signed(forged_callback()))
    assert status == 409 and "is running already" in text, text
    await run
    assert_resumed_once(await world.n8n.settled(execution_id), REPEATED)
    [job] = await jobs_of(world, RUNNING, execution_id)
    assert job["callback"]["state"] == "delivered"


async def test_a_resume_call_not_from_the_bridge_is_refused_and_the_wait_goes_on(
    world: World,
) -> None:
    """The credential has a Callback Secret: a call to the resume URL without the bridge's
    signature, or with another key's, is refused (401) and changes nothing; 2.x also refuses a
    call without its own token in the URL. The bridge's callback then resumes the execution."""
    started = await world.run("e2e-resume-forged")
    assert started.status == "waiting", started.error
    url = world.n8n.resume_url(started)
    content = orjson.dumps(forged_callback())
    calls = [
        ("unsigned", url, content, {"Content-Type": "application/json"}, "not signed"),
        ("another key", url, *signed(forged_callback(), "whsec_" + "QW5vdGhlcktleQ=="), "match"),
        # what anyone allowed to submit a job gets by naming this resume URL as its callback: a
        # callback the bridge signed, without this execution's tag in the URL
        ("another job's", url, *signed(forged_callback()), "not for this execution"),
    ]
    if world.env.runtime.major >= 2:
        bare = url.split("?")[0]
        calls += [
            ("no token", bare, *signed(forged_callback()), "Invalid token"),
            ("wrong token", f"{bare}?signature=0{'f' * 63}", *signed(forged_callback()), "token"),
        ]
    for name, target, body, headers, reason in calls:
        status, text = await post(target, body, headers)
        assert (status, reason in text) == (401, True), f"{name}: {status} {text}"
        assert world.n8n.read(started.id).status == "waiting", name
    ended = await world.n8n.settled(started.id)
    assert ended.status == "success", ended.error
    assert len(ended.run_data["After"]) == 1
    assert ended.json("After") == [{"slept": JOB_S, "label": f"input {n}"} for n in (0, 1)]
    [job] = await jobs_of(world, FORGED, started.id)
    assert (job["callback"]["state"], job["callback"]["attempts"]) == ("delivered", 1)


async def test_without_a_callback_secret_the_node_waits_only_on_a_signed_resume_url(
    world: World,
) -> None:
    """n8n 1.x's resume URL is /webhook-waiting/<execution id>: without a Callback Secret anyone
    who can reach n8n could resume the execution with items of their own, so the node refuses to
    wait there and submits nothing. n8n 2.x signs the URL: the node waits, and is resumed."""
    started = await world.run("e2e-resume-unsigned")
    execution = await world.n8n.settled(started.id)
    jobs = await jobs_of(world, UNSIGNED, started.id)
    if world.env.runtime.major >= 2:
        assert_resumed_once(execution, REPEATED)
        assert [job["status"] for job in jobs] == ["completed"]
        return
    assert execution.status == "error"
    assert execution.error is not None
    assert "Callback Secret on this n8n" in execution.error["message"]
    assert jobs == []


async def test_with_on_error_a_node_that_cannot_wait_gives_error_items_not_its_inputs(
    world: World,
) -> None:
    """*On Error: Continue (using error output)*: where the node cannot wait (n8n 1.x without a
    Callback Secret) every input gets an error item on the error output — n8n would otherwise pass
    the inputs on, on the main output, as if the job had run."""
    started = await world.run("e2e-resume-unsigned-out")
    execution = await world.n8n.settled(started.id)
    assert execution.status == "success", execution.error
    if world.env.runtime.major >= 2:
        assert_resumed_once(execution, REPEATED)
        return
    assert execution.output("Wait for job") == []
    errors = execution.output("Wait for job", 1)
    assert [e["pairedItem"]["item"] for e in errors] == [0, 1, 2]
    assert {e["json"]["error"]["code"] for e in errors} == {"node_error"}
    assert "Callback Secret on this n8n" in errors[0]["json"]["message"]
    assert "After" not in execution.run_data
    assert await jobs_of(world, UNSIGNED_OUT, started.id) == []


async def test_a_waiting_node_in_a_loop_runs_a_job_of_its_own_each_round(world: World) -> None:
    """Each round of a loop is a run of its own: its own job, resumed with its own items (the
    default idempotency key holds the run index; a retried node keeps it)."""
    started = await world.run("e2e-resume-loop")
    execution = await world.n8n.settled(started.id)
    assert execution.status == "success", execution.error
    rounds = [execution.json("Wait for job", run=r) for r in range(3)]
    assert rounds == [[{"n": n, "copy": 0}] for n in range(3)]
    jobs = await jobs_of(world, LOOP, started.id)
    assert len(jobs) == 3 and {job["status"] for job in jobs} == {"completed"}
