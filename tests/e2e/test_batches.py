"""Execute in batches, inside a real n8n (1.123 and 2.x): many items, a small Batch Size, several
Batches in Parallel, and a processor that gives zero, one or several outputs per item.

Every output is paired with its input across batch boundaries and batches running at once, the
output keeps input order even when a later batch finishes first, and the nodes after it read
their paired input item with `$('Items').item` — what pairedItem is for.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from tests.e2e.conftest import Env, World
from tests.e2e.n8n import Execution
from tests.e2e.workflow import BRIDGE, CODE, SET, Workflow, items_code, set_fields

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

BATCH_SIZE = 4
PARALLEL = 3
# Outputs per input: zero, one or many, a batch of nothing but zeros (inputs 4-7), and a short
# last batch (20-21).
COPIES = [1, 0, 3, 1, 0, 0, 0, 0, 2, 1, 0, 5, 1, 1, 1, 1, 0, 2, 3, 0, 4, 1]
SLOW_S = 3.0  # the first batch's delay: every later batch finishes before it


def inputs() -> list[dict[str, Any]]:
    return [
        {"n": n, "label": f"input {n}", "copies": copies, "delay": SLOW_S if n < BATCH_SIZE else 0}
        for n, copies in enumerate(COPIES)
    ]


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    wf = Workflow("e2eBatches", webhook="e2e-batches")
    wf.add("Items", CODE, jsCode=items_code(inputs()))
    wf.add(
        "Fan out",
        BRIDGE,
        operation="execute",
        processingType="fan_out",
        options={"batchSize": BATCH_SIZE, "parallelBatches": PARALLEL},
    )
    # The bridge's outputs carry none of the input's fields: these read them through pairedItem.
    wf.add("Label", SET, **set_fields(label="={{ $('Items').item.json.label }}"))
    wf.add(
        "Number",
        CODE,
        mode="runOnceForEachItem",
        jsCode="return { json: { ...$json, n: $('Items').item.json.n } };",
    )
    wf.chain("Webhook", "Items", "Fan out", "Label", "Number")
    return [wf.document()]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def run(world: World) -> Execution:
    execution = await world.run("e2e-batches")
    assert execution.status == "success", execution.error
    return execution


async def test_outputs_are_paired_with_their_inputs_across_parallel_batches(
    run: Execution,
) -> None:
    expected = [n for n, copies in enumerate(COPIES) for _ in range(copies)]
    assert run.paired("Fan out") == expected
    assert [o["copy"] for o in run.json("Fan out")] == [
        copy for copies in COPIES for copy in range(copies)
    ]
    # The batches ran at once, and the first finished last: order is input order all the same.
    outputs = run.json("Fan out")
    batch_of = [n // BATCH_SIZE for n in expected]
    first = [o for o, batch in zip(outputs, batch_of, strict=True) if batch == 0]
    later = [o for o, batch in zip(outputs, batch_of, strict=True) if batch > 0]
    assert max(o["done"] for o in later) < min(o["done"] for o in first)
    assert max(o["started"] for o in later) < min(o["done"] for o in first)


async def test_nodes_after_it_read_each_outputs_own_input(run: Execution) -> None:
    expected = [n for n, copies in enumerate(COPIES) for _ in range(copies)]
    assert [o["label"] for o in run.json("Label")] == [f"input {n}" for n in expected]
    assert [o["n"] for o in run.json("Number")] == expected
    assert run.paired("Number") == list(range(len(expected)))
