"""What a person does in n8n's editor with these nodes, through the REST API the editor calls — in
n8n 1.123 and in 2.x, against a real bridge: the credential's *Test*, the Processing Type dropdown,
the processor's Parameters fields, and the node's AI-agent tool variant (`…pythonBridgeTool`).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.e2e.conftest import World, bridge_headers
from tests.e2e.editor import Editor, editor
from tests.e2e.n8n import NODES_DIST
from tests.e2e.workflow import BRIDGE, CREDENTIAL, CREDENTIAL_ID

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

TOOL = f"{BRIDGE}Tool"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ui(world: World) -> AsyncIterator[Editor]:
    async with editor(world.n8n.url) as client:
        yield client


def bridge_node(**parameters: Any) -> dict[str, Any]:
    """A Python Bridge node as the editor holds it while its parameters are edited."""
    return {
        "type": BRIDGE,
        "typeVersion": 1,
        "parameters": {"operation": "execute", **parameters},
        "credentials": CREDENTIAL,
    }


async def bridge_processors(world: World) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{world.bridge.url}/api/v1/processors", headers=bridge_headers("status")
        ) as response,
    ):
        assert response.status == 200
        return (await response.json())["processors"]  # type: ignore[no-any-return]


async def test_credential_test_passes_with_the_right_secret(ui: Editor) -> None:
    credential = await ui.credential(CREDENTIAL_ID)
    assert await ui.test_credential(credential) == {
        "status": "OK",
        "message": "Connection successful!",
    }


async def test_credential_test_fails_with_a_wrong_secret_and_says_why(
    ui: Editor, world: World
) -> None:
    credential = await ui.credential(CREDENTIAL_ID)
    credential["data"]["jwtSecret"] = "a-wrong-secret-that-is-long-enough-0123456789"  # typed in
    verdict = await ui.test_credential(credential)
    # 2.x shows the failed request's reason phrase (the bridge's message); 1.x a 401's generic text
    why = {
        1: "Authorization failed - please check your credentials",
        2: "the token's signature does not verify",
    }[world.env.runtime.major]
    assert verdict == {"status": "Error", "message": why}


async def test_the_processor_dropdown_lists_the_bridge_s_processors(
    ui: Editor, world: World
) -> None:
    options = await ui.options(bridge_node(), "processingType", "getProcessors")
    expected = [
        {"name": p["name"], "value": p["name"], "description": p["description"]}
        for p in await bridge_processors(world)
    ]
    assert options == expected
    assert {"template_render", "validation", "email_send", "echo"} <= {o["value"] for o in options}


async def test_the_parameters_fields_are_the_processor_s_simple_parameters(ui: Editor) -> None:
    node = bridge_node(processingType="template_render")
    fields = await ui.resource_mapper_fields(node, "processorFields", "getProcessorFields")
    by_id = {f["id"]: f for f in fields}
    assert by_id["template"]["type"] == "string"
    assert by_id["output_field"]["type"] == "string"
    assert not by_id["output_field"]["required"]


async def test_the_parameters_fields_of_an_unknown_processor_are_none(ui: Editor) -> None:
    node = bridge_node(processingType="no_such_processor")
    assert await ui.resource_mapper_fields(node, "processorFields", "getProcessorFields") == []


def tool_description() -> str:
    """The tool's description for the model, as the built node package states it."""
    script = "process.stdout.write(require(process.argv[1]).TOOL_DESCRIPTION)"
    module = str(NODES_DIST / "nodes" / "PythonBridge" / "tool.js")
    return subprocess.run(
        ["node", "-e", script, module], capture_output=True, text=True, check=True
    ).stdout


async def test_the_tool_variant_is_listed_with_its_description_for_the_model(ui: Editor) -> None:
    listed = {t["name"]: t for t in await ui.node_types()}  # what the editor offers
    assert BRIDGE in listed
    tool = listed[TOOL]
    assert tool["displayName"] == "Python Bridge Tool"
    assert (tool["inputs"], tool["outputs"]) == ([], ["ai_tool"])
    properties = {p["name"]: p for p in tool["properties"]}
    assert "descriptionType" not in properties  # n8n's generic pair (auto: the node's subtitle)
    described = tool_description()
    assert properties["toolDescription"]["default"] == described
    assert "`processor`" in described and "`parameters`" in described
