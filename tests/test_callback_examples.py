"""The callback-verifying examples of docs/background-jobs.md, run as the page prints them
(extracted from its text) against real callbacks: a bridge with a callback secret sends a job's
callback by POST and by GET to a loopback server, and the Python example (the `standardwebhooks`
library) and the n8n Code node example (JavaScript, run by `node` with what n8n's Wait node gives
the node after it) each take both and refuse tampered copies (issue 19). The Code node example
also runs inside a real n8n, after its Wait node: tests/e2e/test_callback_code_node.py."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

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


@pytest.fixture
def backend() -> str:
    return "embedded"  # what is signed does not depend on the backend


def documented(test_name: str, language: str) -> str:
    """The code block of the page marked as checked by `test_name`."""
    marker = f"<!-- doc: checked by tests/test_callback_examples.py::{test_name} -->"
    found = re.search(re.escape(marker) + rf"\n```{language}\n(.*?)\n```\n", PAGE.read_text(), re.S)
    assert found, f"no {language} block marked for {test_name} in {PAGE.name}"
    return found.group(1)


async def callbacks(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> dict[str, Received]:
    """One real callback of each method, as the receiving server got it."""
    client = await make_client(callback_secret=SECRET)
    for method in ("POST", "GET"):
        body = {
            "processing_type": "echo",
            "mode": "async",
            "items": [{"json": {"text": "héllo", "n": 10**17, "x": 0.1}}],
            "workflow_id": WORKFLOW_ID,
            "execution_id": EXECUTION_ID,
            "callback_url": target.url(f"/webhook-waiting/{method.lower()}?{OWN_QUERY}"),
            "callback_method": method,
        }
        response = await client.post("/api/v1/workflow/execute", json=body, headers=auth)
        assert response.status == 202, await response.text()
    received = await target.wait_for(2)
    return {call.method: call for call in received}


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


async def test_the_python_example_verifies_real_callbacks(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    example: dict[str, Any] = {}
    exec(documented("test_the_python_example_verifies_real_callbacks", "python"), example)
    verified_callback = example["verified_callback"]
    received = await callbacks(make_client, auth, target)

    def verify(call: Received) -> Any:
        return verified_callback(SECRET, call.method, call.headers, call.body, raw_query(call))

    posted = verify(received["POST"])
    assert posted["status"] == "completed" and posted["execution_id"] == EXECUTION_ID
    assert posted["items"][0]["json"] == {"text": "héllo", "n": 10**17, "x": 0.1}
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
    # What the page says of the official verifier: without json_parse=False, a valid GET
    # callback's signature checks out, then its query fails to parse as JSON.
    signed = raw_query(received["GET"]).removeprefix(OWN_QUERY + "&")
    Webhook(SECRET).verify(signed, received["GET"].headers, json_parse=False)
    with pytest.raises(json.JSONDecodeError):
        Webhook(SECRET).verify(signed, received["GET"].headers)


# What n8n gives the Code node, for its globals: the Wait node's output item ($json: headers in
# lower case, the query parsed, the body parsed) and, with its option Raw Body, the body's bytes
# as the binary property `data`.
HARNESS = r"""
const fs = require('fs');
const given = JSON.parse(fs.readFileSync(0, 'utf8'));
const code = fs.readFileSync(process.argv[2], 'utf8');
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const node = new AsyncFunction('$json', '$itemIndex', '$env', '$execution', 'require', code);
const helpers = {
  getBinaryDataBuffer: async (index, name) => {
    if (index !== 0 || name !== 'data' || given.raw === null) throw new Error('no binary data');
    return Buffer.from(given.raw, 'base64');
  },
};
node.call({ helpers }, given.json, 0, { BRIDGE_CALLBACK_SECRET: given.secret },
  { id: given.executionId }, require)
  .then((result) => console.log(JSON.stringify(result)))
  .catch((error) => { console.log(JSON.stringify({ refused: error.message })); });
"""


def wait_node_output(call: Received) -> dict[str, Any]:
    query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(raw_query(call)).items()}
    body = json.loads(call.body) if call.body else {}
    headers = {k.lower(): v for k, v in call.headers.items()}
    return {"headers": headers, "params": {}, "query": query, "body": body}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_the_n8n_code_node_example_verifies_real_callbacks(
    make_client: ClientFactory, auth: dict[str, str], target: Target, tmp_path: Path
) -> None:
    code = tmp_path / "code_node.js"
    code.write_text(
        documented("test_the_n8n_code_node_example_verifies_real_callbacks", "javascript")
    )
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    received = await callbacks(make_client, auth, target)

    def run(call: Received, execution_id: str = EXECUTION_ID) -> dict[str, Any]:
        given = {
            "json": wait_node_output(call),
            "raw": base64.b64encode(call.body).decode() if call.method == "POST" else None,
            "secret": SECRET,
            "executionId": execution_id,
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
        # Signed, but sent to another execution's resume URL.
        assert run(call, execution_id="another") == {
            "refused": "this callback is for another execution"
        }
