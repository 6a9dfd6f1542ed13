"""The n8n Code node example of docs/background-jobs.md ("Verifying a callback"), inside a real
n8n (1.123 and 2.x), as a user without this repository's nodes would wait for a job: an HTTP
Request node submits it with `callback_url` = `$execution.resumeUrl`, n8n's Wait node (*Resume: On
Webhook Call*) takes the bridge's signed callback, and a Code node running the page's JavaScript
(taken from the page at test time) verifies it. n8n runs with what the page says it needs, and the
job is submitted with what the page says to send. A callback the bridge genuinely signed for
another job made for the waiting execution — another workflow's, replayed to the resume URL, or
this workflow's, aimed at it — fails the execution with the page's message.
"""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.auth import mint_token
from bridge.webhook_attempt import GET_FIELDS
from bridge.webhooks import Signer
from tests.e2e.conftest import CALLBACK_SECRET, SETTINGS, Env, World, bridge_headers
from tests.e2e.workflow import CODE, WAIT, Workflow
from tests.test_callback_examples import PAGE, documented
from tests.webhook_target import Target

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

EXAMPLE = "test_the_n8n_code_node_example_verifies_real_callbacks"
HTTP_REQUEST = "n8n-nodes-base.httpRequest"
# Per method: the workflow and its webhook.
WORKFLOWS = {"POST": "e2eCallbackCodePost", "GET": "e2eCallbackCodeGet"}
REFUSED = "the callback signature does not match BRIDGE_CALLBACK_SECRET"
ANOTHER = "this callback is for another job or execution"
SUBMIT = "Submit job"  # the name the page's code reads the job's id from
JOB_S = 120  # the forged test's job: it runs until the test cancels it


def path(method: str) -> str:
    return f"e2e-callback-code-{method.lower()}"


def paragraph_before_example() -> str:
    marker = f"<!-- doc: checked by tests/test_callback_examples.py::{EXAMPLE} -->"
    return PAGE.read_text().split(marker)[0].rstrip().split("\n\n")[-1]


def e2e_n8n_environment() -> dict[str, str]:
    """What the page says n8n must run with: the `NAME=value` settings of the paragraph before
    the example, and BRIDGE_CALLBACK_SECRET (the bridge's)."""
    before = paragraph_before_example()
    assert "`BRIDGE_CALLBACK_SECRET` in its environment" in before, before
    settings = dict(re.findall(r"`([A-Z][A-Z0-9_]*)=([^`\s]+)`", before))
    assert settings, before
    return {**settings, "BRIDGE_CALLBACK_SECRET": CALLBACK_SECRET}


def waiting_for_callback(method: str, env: Env) -> Workflow:
    """Webhook → Submit job (the bridge's execute endpoint, mode async, the processor and its
    parameters from the webhook's body) → Wait for callback → Verify callback (the page's code)."""
    token = mint_token(SETTINGS, ["execute"], 86400)
    wf = Workflow(WORKFLOWS[method], webhook=path(method))
    # The body as JSON with expressions in it: the resume URL, this execution and workflow.
    body = (
        '={"processing_type": "{{ $json.body.processing_type }}",'
        ' "parameters": {{ JSON.stringify($json.body.parameters) }},'
        ' "items": [{"json": {"n": 1}}], "mode": "async",'
        ' "workflow_id": "{{ $workflow.id }}", "execution_id": "{{ $execution.id }}",'
        f' "callback_url": "{{{{ $execution.resumeUrl }}}}", "callback_method": "{method}"}}'
    )
    # What the page says to send, and the name of the node its code reads the job's id from.
    before = paragraph_before_example()
    sent = re.findall(r'`("[a-z_]+": "\{\{ [^`]* \}\}")`', before)
    assert {field.split('"')[1] for field in sent} >= {"workflow_id", "execution_id"}, before
    assert all(field in body for field in sent), sent
    assert f"named *{SUBMIT}*" in before, before
    wf.add(
        SUBMIT,
        HTTP_REQUEST,
        typeVersion=4.2,
        method="POST",
        url=f"{env.bridge_url}/api/v1/workflow/execute",
        sendHeaders=True,
        headerParameters={"parameters": [{"name": "Authorization", "value": f"Bearer {token}"}]},
        sendBody=True,
        specifyBody="json",
        jsonBody=body,
        options={},
    )
    wf.add(
        "Wait for callback",
        WAIT,
        webhookId=str(uuid.uuid5(uuid.NAMESPACE_URL, WORKFLOWS[method])),
        resume="webhook",
        httpMethod=method,
        responseMode="onReceived",
        options={"rawBody": True} if method == "POST" else {},
    )
    wf.add(
        "Verify callback", CODE, mode="runOnceForEachItem", jsCode=documented(EXAMPLE, "javascript")
    )
    wf.chain("Webhook", SUBMIT, "Wait for callback", "Verify callback")
    return wf


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    return [waiting_for_callback(method, env).document() for method in WORKFLOWS]


@pytest.mark.parametrize("method", list(WORKFLOWS))
async def test_the_code_node_example_verifies_the_bridges_callback(
    world: World, method: str
) -> None:
    """The bridge's callback resumes the execution, the page's code verifies it and puts out the
    job's outcome: the POST body, or the query the bridge added (not n8n 2.x's `signature`)."""
    started = await world.run(path(method), {"processing_type": "echo", "parameters": {}})
    execution = await world.n8n.settled(started.id)
    assert execution.status == "success", execution.error
    [submitted] = execution.json(SUBMIT)
    [outcome] = execution.json("Verify callback")
    assert outcome["job_id"] == submitted["job_id"]
    assert outcome["status"] == "completed"
    assert outcome["execution_id"] == str(execution.id)
    assert outcome["workflow_id"] == WORKFLOWS[method]
    if method == "POST":  # the callback's body, parsed
        assert outcome["items"] == [{"json": {"n": 1}, "pairedItem": {"item": 0}}]
    else:  # the query the bridge added (strings)
        assert list(outcome) == [*GET_FIELDS, "item_count", "error_count"]
        assert (outcome["item_count"], outcome["error_count"]) == ("1", "0")


def tampered(headers: dict[str, str]) -> dict[str, str]:
    """The same headers with the signature's first byte changed."""
    version, value = headers["webhook-signature"].split(",")
    digest = bytearray(base64.b64decode(value))
    digest[0] ^= 1
    return {**headers, "webhook-signature": f"{version},{base64.b64encode(digest).decode()}"}


@pytest.mark.parametrize("method", list(WORKFLOWS))
async def test_a_forged_callback_makes_the_code_node_throw(world: World, method: str) -> None:
    """A callback with the bridge's fields but a tampered signature, sent to the real resume URL
    while the job runs: n8n's Wait node takes it (it checks nothing), the page's code refuses it
    and the execution fails with the page's message. The job is then cancelled (its callback to
    the finished execution is refused by n8n, and given up)."""
    sleep = {"processing_type": "sleep", "parameters": {"seconds": JOB_S}}
    started = await world.run(path(method), sleep)
    assert started.status == "waiting", started.error
    [submitted] = started.json(SUBMIT)
    outcome = {
        "job_id": submitted["job_id"],
        "workflow_id": WORKFLOWS[method],
        "execution_id": str(started.id),
        "status": "completed",
    }
    url = world.n8n.resume_url(started)
    if method == "POST":
        content = orjson.dumps({**outcome, "items": [{"json": {"forged": True}}]})
        target = url
    else:
        query = urlencode({**outcome, "item_count": 1, "error_count": 0})
        content = query.encode()
        target = f"{url}{'&' if '?' in url else '?'}{query}"
    headers = tampered(Signer(CALLBACK_SECRET).headers(f"msg_{uuid.uuid4().hex}", content))
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            target,
            data=content if method == "POST" else None,
            headers={**headers, "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    execution = await world.n8n.settled(started.id)
    assert execution.status == "error"
    assert execution.error is not None
    # n8n adds where the code threw: " [line …, for item 0]"
    assert execution.error["message"].startswith(REFUSED), execution.error
    assert execution.data["resultData"]["lastNodeExecuted"] == "Verify callback"
    assert REFUSED in documented(EXAMPLE, "javascript")
    await cancel(world, submitted["job_id"])


async def cancel(world: World, job_id: str) -> None:
    """Cancel the waiting execution's own job (it runs all along): its callback to the finished
    execution is refused by n8n, and given up."""
    async with (
        aiohttp.ClientSession() as session,
        session.delete(
            f"{world.bridge.url}/api/v1/workflow/{job_id}", headers=bridge_headers("execute")
        ) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.mark.parametrize("attack", ["another workflow", "another job"])
@pytest.mark.parametrize("method", list(WORKFLOWS))
async def test_a_genuine_callback_of_another_job_makes_the_code_node_throw(
    world: World, method: str, attack: str
) -> None:
    """While an execution waits for its job, the test submits a job of its own with the
    execution's id: with a token for another workflow only, its callback sent to the test and
    replayed to the resume URL; or, with a token for every workflow, for this workflow and aimed
    straight at the resume URL (n8n 1.x's is /webhook-waiting/<execution id>). Both are signed by
    the bridge; the page's code refuses them and the execution fails with the page's message."""
    sleep = {"processing_type": "sleep", "parameters": {"seconds": JOB_S}}
    started = await world.run(path(method), sleep)
    assert started.status == "waiting", started.error
    [submitted] = started.json(SUBMIT)
    url = world.n8n.resume_url(started)
    sink = Target()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    sink.server = TestServer(app, host="127.0.0.1")
    await sink.server.start_server()
    try:
        job: dict[str, Any] = {
            "processing_type": "echo",
            "items": [{"json": {"forged": True}}],
            "mode": "async",
            "execution_id": str(started.id),
            "callback_method": method,
        }
        if attack == "another workflow":
            job |= {"workflow_id": "wf-a", "callback_url": sink.url("/attacker")}
            headers = bridge_headers("execute", workflows=["wf-a"])
        else:
            job |= {"workflow_id": WORKFLOWS[method], "callback_url": url}
            headers = bridge_headers("execute")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{world.bridge.url}/api/v1/workflow/execute", json=job, headers=headers
            ) as response,
        ):
            assert response.status == 202, await response.text()
        if attack == "another workflow":
            [captured] = await sink.wait_for(1, timeout=60)
            signed = captured.raw_path.partition("?")[2]  # the query the bridge added
            target = url if method == "POST" else f"{url}{'&' if '?' in url else '?'}{signed}"
            replayed = {
                k: v for k, v in captured.headers.items() if k.lower().startswith("webhook-")
            }
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    method,
                    target,
                    data=captured.body if method == "POST" else None,
                    headers={**replayed, "Content-Type": "application/json"},
                ) as response,
            ):
                assert response.status == 200, await response.text()
        execution = await world.n8n.settled(started.id)
    finally:
        await sink.server.close()
    assert execution.status == "error"
    assert execution.error is not None
    # n8n adds where the code threw: " [line …, for item 0]"
    assert execution.error["message"].startswith(ANOTHER), execution.error
    assert execution.data["resultData"]["lastNodeExecuted"] == "Verify callback"
    assert ANOTHER in documented(EXAMPLE, "javascript")
    await cancel(world, submitted["job_id"])
