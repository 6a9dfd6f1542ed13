"""The callback-verifying examples of docs/background-jobs.md, run as the page prints them
(extracted from its text) against real callbacks: a bridge with a callback secret sends a job's
callback by POST and by GET to a loopback server, and the Python example (the `standardwebhooks`
library) and the n8n Code node example (JavaScript, run by `node` with what n8n's Wait node gives
the node after it) each take both and refuse tampered copies (issue 19), and genuinely signed
callbacks of another job made for the waiting execution: one an attacker's token submitted for
another workflow with the victim's execution id and its own callback_url, then replayed to the
victim's URL, and one for the victim's own workflow and URL (a token for every workflow, and n8n
1.x's guessable resume URL). The Code node example also runs inside a real n8n, after its Wait
node: tests/e2e/test_callback_code_node.py."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.auth import mint_token
from bridge.settings import Settings
from tests.conftest import ClientFactory
from tests.webhook_target import Received, Target

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "background-jobs.md"
SECRET = "whsec_" + base64.b64encode(b"callback examples key 32 bytes!!").decode()
# Ids with characters the GET query must form-encode (space, slash, non-ASCII, `*`, `~`, `!`,
# parentheses), so the examples' encoding is shown to be the bridge's.
WORKFLOW_ID = "wf 42 (orders)"
EXECUTION_ID = "ex/7 ä*~!'"
# The resume URL's own query (n8n 2.x signs its resume URLs so) comes before the bridge's fields.
OWN_QUERY = "signature=n8n-own&status=waiting"
# The workflow an attacker's token may submit jobs for.
OTHER_WORKFLOW_ID = "wf-a"
REFUSED = "this callback is for another job or execution"


@pytest.fixture
def backend() -> str:
    return "embedded"  # what is signed does not depend on the backend


def documented(test_name: str, language: str) -> str:
    """The code block of the page marked as checked by `test_name`."""
    marker = f"<!-- doc: checked by tests/test_callback_examples.py::{test_name} -->"
    found = re.search(re.escape(marker) + rf"\n```{language}\n(.*?)\n```\n", PAGE.read_text(), re.S)
    assert found, f"no {language} block marked for {test_name} in {PAGE.name}"
    return found.group(1)


def waiting_url(target: Target, method: str) -> str:
    """The URL the victim's execution waits on for a callback by `method`."""
    return target.url(f"/webhook-waiting/{method.lower()}?{OWN_QUERY}")


@dataclass(frozen=True)
class Callbacks:
    """Real callbacks of each method, as the receiving server got them: the one the waiting
    execution's own job sent (`genuine`), and genuinely signed ones of other jobs made for that
    execution (`attacks`, by what they tried)."""

    genuine: dict[str, Received]
    attacks: dict[str, dict[str, Received]]


async def callbacks(make_client: ClientFactory, settings: Settings, target: Target) -> Callbacks:
    client = await make_client(callback_secret=SECRET)
    every_workflow = [OTHER_WORKFLOW_ID, WORKFLOW_ID]
    # (name, the workflows its token may name, workflow_id, the callback_url for a method)
    jobs = [
        ("genuine", every_workflow, WORKFLOW_ID, lambda method: waiting_url(target, method)),
        # An attacker's token for another workflow only, the callback sent to the attacker.
        (
            "another workflow",
            [OTHER_WORKFLOW_ID],
            OTHER_WORKFLOW_ID,
            lambda method: target.url(f"/attacker/{method}"),
        ),
        # A token for the victim's workflow too, the callback aimed at its (guessable) URL.
        ("another job", every_workflow, WORKFLOW_ID, lambda method: waiting_url(target, method)),
    ]
    sent: dict[str, tuple[str, str]] = {}  # job_id: (job, method)
    for name, workflows, workflow_id, url in jobs:
        token = mint_token(settings, ["execute"], 300, workflows=workflows)
        auth = {"Authorization": f"Bearer {token}"}
        for method in ("POST", "GET"):
            body = {
                "processing_type": "echo",
                "mode": "async",
                "items": [{"json": {"text": "héllo", "n": 10**17, "x": 0.1}}],
                "workflow_id": workflow_id,
                "execution_id": EXECUTION_ID,
                "callback_url": url(method),
                "callback_method": method,
            }
            if name != "genuine":
                body["items"] = [{"json": {"text": "the attacker's"}}]
            response = await client.post("/api/v1/workflow/execute", json=body, headers=auth)
            assert response.status == 202, await response.text()
            sent[(await response.json())["job_id"]] = (name, method)
    received = await target.wait_for(len(sent))
    by_job: dict[str, dict[str, Received]] = {}
    for call in received:
        job_id = call.query["job_id"] if call.method == "GET" else json.loads(call.body)["job_id"]
        name, method = sent[job_id]
        assert call.method == method
        by_job.setdefault(name, {})[method] = call
    genuine = by_job.pop("genuine")
    # What reaches the victim's URL: the attacker's POST as it was; a GET's query the bridge
    # added, after the victim's URL's own.
    attacks = {
        name: {m: replayed(c, target) for m, c in calls.items()} for name, calls in by_job.items()
    }
    return Callbacks(genuine, attacks)


def replayed(call: Received, target: Target) -> Received:
    """`call` sent again, as it was signed, to the URL the victim's execution waits on: a POST
    as it is, a GET with the query the bridge added after that URL's own."""
    url = urlsplit(waiting_url(target, call.method))
    query = url.query
    if call.method == "GET":
        query += "&" + raw_query(call).removeprefix(OWN_QUERY + "&")
    return replace(call, path=url.path, raw_path=f"{url.path}?{query}")


def raw_query(call: Received) -> str:
    """The query as it came on the wire (aiohttp's `query_string` is decoded)."""
    return call.raw_path.partition("?")[2]


def tampered(call: Received) -> Received:
    """The same callback with its outcome changed: `failed` for `completed`."""
    if call.method == "POST":
        assert b'"status":"completed"' in call.body
        return replace(call, body=call.body.replace(b'"status":"completed"', b'"status":"failed"'))
    assert "&status=completed&" in call.raw_path
    return replace(call, raw_path=call.raw_path.replace("status=completed", "status=failed"))


def waiting_for(call: Received, target: Target) -> dict[str, str]:
    """What the victim's execution waits for, by the genuine callback of a method: its job (the
    202's job_id), workflow, execution and URL."""
    job_id = call.query["job_id"] if call.method == "GET" else json.loads(call.body)["job_id"]
    return {
        "job_id": job_id,
        "workflow_id": WORKFLOW_ID,
        "execution_id": EXECUTION_ID,
        "callback_url": waiting_url(target, call.method),
    }


def signed_content(call: Received) -> str:
    """What the bridge signed: the body, or the query it added."""
    if call.method == "POST":
        return call.body.decode()
    return raw_query(call).removeprefix(OWN_QUERY + "&")


async def test_the_python_example_verifies_real_callbacks(
    make_client: ClientFactory, settings: Settings, target: Target
) -> None:
    example: dict[str, Any] = {}
    exec(documented("test_the_python_example_verifies_real_callbacks", "python"), example)
    verified_callback = example["verified_callback"]
    made = await callbacks(make_client, settings, target)
    received = made.genuine

    def verify(call: Received) -> Any:
        waiting = waiting_for(received[call.method], target)
        return verified_callback(
            SECRET, waiting, call.method, call.headers, call.body, raw_query(call)
        )

    posted = verify(received["POST"])
    assert posted["status"] == "completed" and posted["execution_id"] == EXECUTION_ID
    assert posted["items"][0]["json"] == {"text": "héllo", "n": 10**17, "x": 0.1}
    assert posted["callback_url"] == waiting_url(target, "POST")  # as given, n8n's query too
    got = verify(received["GET"])
    assert got == {
        "job_id": got["job_id"],
        "status": "completed",  # the bridge's, not the URL's own `status=waiting`
        "workflow_id": WORKFLOW_ID,
        "execution_id": EXECUTION_ID,
        "duration_ms": got["duration_ms"],
        "item_count": "1",
        "error_count": "0",
    }
    for call in received.values():
        with pytest.raises(WebhookVerificationError):
            verify(tampered(call))
    # Genuinely signed callbacks of other jobs, made for this execution, sent to its URL.
    for calls in made.attacks.values():
        for call in calls.values():
            Webhook(SECRET).verify(signed_content(call), call.headers, json_parse=False)
            with pytest.raises(WebhookVerificationError, match=REFUSED):
                verify(call)
    # What the page says of the official verifier: without json_parse=False, a valid GET
    # callback's signature checks out, then its query fails to parse as JSON.
    signed = signed_content(received["GET"])
    Webhook(SECRET).verify(signed, received["GET"].headers, json_parse=False)
    with pytest.raises(json.JSONDecodeError):
        Webhook(SECRET).verify(signed, received["GET"].headers)


# What n8n gives the Code node, for its globals: the Wait node's output item ($json: headers in
# lower case, the query parsed, the body parsed) and, with its option Raw Body, the body's bytes
# as the binary property `data`; $workflow, $execution (its id and resume URL), and `$(name)`,
# the output of the node that submitted the job.
HARNESS = r"""
const fs = require('fs');
const given = JSON.parse(fs.readFileSync(0, 'utf8'));
const code = fs.readFileSync(process.argv[2], 'utf8');
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const node = new AsyncFunction(
  '$json', '$itemIndex', '$env', '$execution', '$workflow', '$', 'require', code);
const helpers = {
  getBinaryDataBuffer: async (index, name) => {
    if (index !== 0 || name !== 'data' || given.raw === null) throw new Error('no binary data');
    return Buffer.from(given.raw, 'base64');
  },
};
const nodes = { [given.submittedBy]: [{ json: given.submitted }] };
const $ = (name) => {
  if (!(name in nodes)) throw new Error(`no node called ${name}`);
  return { first: () => nodes[name][0], all: () => nodes[name] };
};
node.call({ helpers }, given.json, 0, { BRIDGE_CALLBACK_SECRET: given.secret },
  { id: given.waiting.execution_id, resumeUrl: given.waiting.callback_url },
  { id: given.waiting.workflow_id }, $, require)
  .then((result) => console.log(JSON.stringify(result)))
  .catch((error) => { console.log(JSON.stringify({ refused: error.message })); });
"""
# The name of the node that submits the job, in the page's paragraph before the Code node.
SUBMITTED_BY = "Submit job"


def wait_node_output(call: Received) -> dict[str, Any]:
    query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(raw_query(call)).items()}
    body = json.loads(call.body) if call.body else {}
    headers = {k.lower(): v for k, v in call.headers.items()}
    return {"headers": headers, "params": {}, "query": query, "body": body}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_the_n8n_code_node_example_verifies_real_callbacks(
    make_client: ClientFactory, settings: Settings, target: Target, tmp_path: Path
) -> None:
    code = tmp_path / "code_node.js"
    code.write_text(
        documented("test_the_n8n_code_node_example_verifies_real_callbacks", "javascript")
    )
    assert f"$('{SUBMITTED_BY}')" in code.read_text()
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    made = await callbacks(make_client, settings, target)
    received = made.genuine

    def run(call: Received, **waiting: str) -> dict[str, Any]:
        expected = {**waiting_for(received[call.method], target), **waiting}
        given = {
            "json": wait_node_output(call),
            "raw": base64.b64encode(call.body).decode() if call.method == "POST" else None,
            "secret": SECRET,
            "waiting": expected,
            "submittedBy": SUBMITTED_BY,
            # What the bridge answered the node that submitted the job (202).
            "submitted": {"job_id": expected["job_id"], "status": "queued"},
        }
        done = subprocess.run(
            ["node", str(harness), str(code)],
            input=json.dumps(given),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    posted = run(received["POST"])["json"]
    assert posted["status"] == "completed" and posted["workflow_id"] == WORKFLOW_ID
    assert posted["items"][0]["json"]["text"] == "héllo"
    got = run(received["GET"])["json"]
    assert got["status"] == "completed" and got["execution_id"] == EXECUTION_ID
    assert got["item_count"] == "1" and got["job_id"] != posted["job_id"]
    for call in received.values():
        assert run(tampered(call)) == {
            "refused": "the callback signature does not match BRIDGE_CALLBACK_SECRET"
        }
        # Signed, but sent to another execution's resume URL, or another workflow's.
        assert run(call, execution_id="another") == {"refused": REFUSED}
        assert run(call, workflow_id=OTHER_WORKFLOW_ID) == {"refused": REFUSED}
    # A POST callback names its URL: sent to another, it is refused (a GET's names none).
    assert run(received["POST"], callback_url=target.url("/elsewhere")) == {"refused": REFUSED}
    assert run(received["GET"], callback_url=target.url("/elsewhere"))["json"] == got
    # Genuinely signed callbacks of other jobs, made for this execution, sent to its URL.
    for calls in made.attacks.values():
        for call in calls.values():
            Webhook(SECRET).verify(signed_content(call), call.headers, json_parse=False)
            assert run(call) == {"refused": REFUSED}
