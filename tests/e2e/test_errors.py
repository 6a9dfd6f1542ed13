"""Error items in a real n8n (1.123 and 2.x): what a failed item, a failed request and a failed
background job put out — on the node's main output ("On Error: Continue"), on its error output
("Continue (using error output)"), and as the error that stops the workflow — and that the next node
can read the code, the item, the job id and the trace id from them.

n8n keeps an output item whole and routes it to the error output only in one shape: json with
`error` and `message` and nothing else (an item carrying `.error` is cut to `{error: message}`).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Env, World
from tests.e2e.n8n import Execution
from tests.e2e.workflow import BRIDGE, CODE, NOOP, Workflow, parameters_json

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

ITEMS_FROM_BODY = "return $input.first().json.body.items.map((json) => ({ json }));"
# What a user reads downstream of a failed item.
READ_ERROR = """return $input.all().map((item) => ({ json: {
  message: item.json.message, code: item.json.error.code, item: item.json.error.item,
  job_id: item.json.error.job_id, trace_id: item.json.error.trace_id, n: item.json.n,
} }));"""

# name → the Bridge node's parameters: each a way for items to fail.
FAILURES: dict[str, dict[str, Any]] = {
    "Processor": {"operation": "execute", "processingType": "fail_odd"},
    "Validation": {
        "operation": "execute",
        "processingType": "validation",
        "parametersJson": parameters_json(
            {"email_fields": ["to"], "on_invalid": "item_error", "normalize_emails": False}
        ),
    },
    "Request": {  # the whole request refused (422): every item of the batch fails
        "operation": "execute",
        "processingType": "validation",
        "parametersJson": parameters_json({"email_fields": ["to"], "on_invalid": "fail"}),
    },
    "Status": {"operation": "getStatus", "jobId": "={{ 'no-such-job-' + $json.n }}"},
    "Batch": {"operation": "execute", "processingType": "crash"},  # the job ran, failed whole
}
MODES = {"regular": "continueRegularOutput", "output": "continueErrorOutput", "stop": None}


def _workflow(mode: str, failure: str) -> Workflow:
    on_error = MODES[mode]
    flow = Workflow(f"e2eErr{mode.title()}{failure}", webhook=f"e2e-errors-{mode}-{failure}")
    flow.add("Items", CODE, jsCode=ITEMS_FROM_BODY)
    settings = {"onError": on_error} if on_error else {}
    flow.add("Bridge", BRIDGE, **FAILURES[failure], **settings)
    flow.add("Read", CODE, jsCode=READ_ERROR).add("Passed", NOOP)
    flow.chain("Webhook", "Items", "Bridge")
    if mode == "output":
        flow.wire("Bridge", "Passed", output=0).wire("Bridge", "Read", output=1)
    else:
        flow.wire("Bridge", "Passed")
    return flow


def _waiting_workflow(mode: str) -> Workflow:
    flow = Workflow(f"e2eErrJob{mode.title()}", webhook=f"e2e-errors-job-{mode}")
    flow.add("Items", CODE, jsCode=ITEMS_FROM_BODY)
    flow.add(
        "Bridge",
        BRIDGE,
        operation="executeAndWait",
        processingType="={{ $json.processor }}",
        onError=MODES[mode],
    )
    flow.add("Read", CODE, jsCode=READ_ERROR).add("Passed", NOOP)
    flow.chain("Webhook", "Items", "Bridge")
    flow.wire("Bridge", "Passed", output=0)
    flow.wire("Bridge", "Read", output=1 if mode == "output" else 0)
    return flow


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    flows = [_workflow(mode, failure) for mode in MODES for failure in FAILURES]
    flows += [_waiting_workflow(mode) for mode in ("regular", "output")]
    return [flow.document() for flow in flows]


CONTACTS = [
    {"n": 0, "to": "ada@example.com"},
    {"n": 1, "to": "not an address"},
    {"n": 2, "to": "grace@example.com"},
    {"n": 3, "to": "also@not@valid"},
]
FAILED = {  # failure → the input items that fail, and their error code
    "Processor": ([1, 3], "processor_error"),
    "Validation": ([1, 3], "validation"),
    "Request": ([0, 1, 2, 3], "validation"),
    "Status": ([0, 1, 2, 3], "not_found"),
    "Batch": ([0, 1, 2, 3], "processor_error"),
}


def _check_error_item(item: dict[str, Any], index: int, code: str) -> dict[str, Any]:
    """One error item: the shape n8n keeps, with the bridge's code, the input's index and the
    trace id (and the job's id when a job ran)."""
    json = item["json"]
    error = json["error"]
    assert item["pairedItem"]["item"] == index, item
    assert error["code"] == code and error["item"] == index, json
    assert json["message"] and json["message"] == error["message"], json
    assert len(error["trace_id"]) >= 16, json
    return json  # type: ignore[no-any-return]


@pytest.mark.parametrize("failure", FAILURES)
async def test_failed_items_on_the_main_output(world: World, failure: str) -> None:
    """Continue: in input order, each failed item in the error shape, the others as results."""
    run = await world.run(f"e2e-errors-regular-{failure}", {"items": CONTACTS})
    assert run.status == "success", run.error
    failed, code = FAILED[failure]
    out = run.output("Bridge")
    assert run.paired("Bridge") == [0, 1, 2, 3]
    for index, item in enumerate(out):
        if index in failed:
            _check_error_item(item, index, code)
            assert set(item["json"]) == {"message", "error"}
        else:
            assert "error" not in item["json"] and item["json"]["n"] == index
    assert run.output("Bridge", 1) == []


@pytest.mark.parametrize("failure", FAILURES)
async def test_failed_items_on_the_error_output(world: World, failure: str) -> None:
    """Continue (using error output): exactly the failed items go there, each with its input's
    fields beside the error (n8n adds them), and the next node reads code, item, job and trace."""
    run = await world.run(f"e2e-errors-output-{failure}", {"items": CONTACTS})
    assert run.status == "success", run.error
    failed, code = FAILED[failure]
    assert run.paired("Bridge", 1) == failed
    assert run.paired("Bridge", 0) == [i for i in range(4) if i not in failed]
    for item, index in zip(run.output("Bridge", 1), failed, strict=True):
        json = _check_error_item(item, index, code)
        assert json["n"] == index and json["to"] == CONTACTS[index]["to"]  # the input's fields
    read = run.json("Read")
    assert [r["item"] for r in read] == failed and {r["code"] for r in read} == {code}
    assert all(r["trace_id"] and r["message"] for r in read)
    if failure in ("Processor", "Validation", "Batch"):  # a job ran: its id names it
        assert all(r["job_id"] for r in read)
    refused = {"Request": 422, "Status": 404, "Batch": 500}.get(failure)  # the whole call failed
    errors = [item["json"]["error"] for item in run.output("Bridge", 1)]
    assert {e.get("http_code") for e in errors} == {refused}
    if failure == "Status":  # the bridge's advice, where it gives one
        assert all("job ids are 32 lowercase hex digits" in e["description"] for e in errors)


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_item_stops_the_workflow_with_what_the_bridge_said(
    world: World, failure: str
) -> None:
    run = await world.run(f"e2e-errors-stop-{failure}", {"items": CONTACTS})
    assert run.status == "error"
    error = run.error
    assert error is not None
    failed, code = FAILED[failure]
    assert code in error["description"] and "Trace ID" in error["description"], error
    assert error["context"].get("itemIndex") == failed[0], error
    http_code = error.get("httpCode")
    assert http_code in (None, "404", "422", "500"), error  # an HTTP status, never a code
    if failure in ("Processor", "Validation", "Batch"):
        assert "Job ID: " in error["description"], error
    assert "Passed" not in run.run_data


def _job_errors(run: Execution, output: int) -> list[dict[str, Any]]:
    return [
        _check_error_item(item, i, "processor_error")
        for i, item in enumerate(run.output("Bridge", output))
    ]


@pytest.mark.parametrize("mode", ["regular", "output"])
async def test_a_failed_background_job_gives_every_input_an_error_item(
    world: World, mode: str
) -> None:
    """Execute in Background and Wait: the job failed as a whole, so each of its inputs gets an
    error item naming the job — on the error output when the node has one."""
    items = [{"n": n, "processor": "crash"} for n in range(3)]
    run = await world.run(f"e2e-errors-job-{mode}", {"items": items}, states=("success", "error"))
    assert run.status == "success", run.error
    output = 1 if mode == "output" else 0
    errors = _job_errors(run, output)
    assert len(errors) == 3
    assert {e["error"]["status"] for e in errors} == {"failed"}
    assert len({e["error"]["job_id"] for e in errors}) == 1
    assert "the whole batch broke" in errors[0]["message"]
    assert [r["item"] for r in run.json("Read")] == [0, 1, 2]
