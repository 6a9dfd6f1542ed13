"""The node's processor parameters inside a real n8n (1.123 and 2.x): the "Parameters" fields (a
resource mapper, saved as the editor saves it) together with "Parameters (JSON)".

The fields win over the same keys of the JSON, a field left empty leaves the JSON's value, keys
only the JSON has (a list: no field for it) pass, and a field may be an expression — read once
per node run, from the first item (n8n-nodes/README.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Env, World
from tests.e2e.workflow import BRIDGE, CODE, Workflow, items_code, parameters_json

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]


def field(name: str, field_type: str, **more: Any) -> dict[str, Any]:
    """One entry of a saved resource mapper's schema, as the node's getProcessorFields gives it."""
    return {
        "id": name,
        "displayName": name,
        "required": False,
        "defaultMatch": False,
        "display": True,
        "type": field_type,
        "canBeUsedToMatch": False,
        "removed": False,
        **more,
    }


# The fields of tests.plugins.sample's `show_params` (its `tags`, a list, has none).
SCHEMA = [
    field("greeting", "string"),
    field("times", "number"),
    field("ratio", "number"),
    field("loud", "boolean"),
    field("tone", "options", options=[{"name": t, "value": t} for t in ("plain", "warm")]),
]


async def e2e_workflows(env: Env) -> list[dict[str, Any]]:
    wf = Workflow("e2eParameters", webhook="e2e-parameters")
    wf.add("Items", CODE, jsCode=items_code([{"n": 0, "name": "Ada"}, {"n": 1, "name": "Grace"}]))
    wf.add(
        "Show parameters",
        BRIDGE,
        operation="execute",
        processingType="show_params",
        processorFields={
            "mappingMode": "defineBelow",
            "value": {
                "greeting": "={{ $json.name }}",
                "times": "={{ $('Webhook').item.json.body.times + 1 }}",
                "ratio": None,  # added, left empty
                "loud": True,
                "tone": "warm",
            },
            "matchingColumns": [],
            "schema": SCHEMA,
            "attemptToConvertTypes": False,
            "convertFieldsToString": True,
        },
        parametersJson=parameters_json(
            {"greeting": "from JSON", "times": 9, "ratio": 0.5, "tone": "plain", "tags": ["a"]}
        ),
    )
    wf.chain("Webhook", "Items", "Show parameters")
    return [wf.document()]


async def test_fields_win_over_the_json_and_may_be_expressions(world: World) -> None:
    run = await world.run("e2e-parameters", {"times": 2})
    assert run.status == "success", run.error
    shown = run.json("Show parameters")
    assert [o["n"] for o in shown] == [0, 1]
    assert run.paired("Show parameters") == [0, 1]
    expected = {
        "greeting": "Ada",  # the first item's, for every item
        "times": 3,
        "ratio": 0.5,
        "loud": True,
        "tone": "warm",
        "tags": ["a"],
    }
    assert [o["parameters"] for o in shown] == [expected, expected]
