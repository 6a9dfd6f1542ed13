"""What a person does in n8n's editor with these nodes, through the REST API the editor calls — in
n8n 1.123 and in 2.x, against a real bridge: the credential's *Test*, the Processing Type dropdown,
the processor's Parameters fields, and the node's AI-agent tool variant (`…pythonBridgeTool`).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from tests.e2e.conftest import World, bridge_headers
from tests.e2e.editor import Editor, editor
from tests.e2e.n8n import NODES_DIST, Execution
from tests.e2e.workflow import BRIDGE, CREDENTIAL, CREDENTIAL_ID, Workflow

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


# The parameters are JSON text (n8n 2.x refuses an empty object for a `json` tool input).
TOOL_ARGUMENTS = {
    "processor": "template_render",
    "parameters": '{"template": "2 + 3 = {{ 2 + 3 }}"}',
}


class FakeModel:
    """An OpenAI-compatible chat model that calls the first tool it is offered once — with a
    processor and its parameters — and then answers with what the tool returned."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        tool_results = [m for m in body["messages"] if m["role"] == "tool"]
        message: dict[str, Any]
        if tool_results:
            message = {
                "role": "assistant",
                "content": f"The tool said: {tool_results[0]['content']}",
            }
            finish = "stop"
        else:
            call = {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": body["tools"][0]["function"]["name"],
                    "arguments": orjson.dumps(TOOL_ARGUMENTS).decode(),
                },
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fake_model() -> AsyncIterator[tuple[FakeModel, str]]:
    model = FakeModel()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.complete)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield model, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


def agent_workflow(path: str, model_credential: str) -> dict[str, Any]:
    """Webhook → AI Agent, with a chat model and the Python Bridge Tool as it comes (the model
    chooses the processor and its parameters)."""
    wf = Workflow(f"agent-{path}", webhook=path)
    wf.add(
        "Agent",
        "@n8n/n8n-nodes-langchain.agent",
        typeVersion=3,
        promptType="define",
        text="={{ $json.body.question }}",
        options={},
    )
    wf.add(
        "Model",
        "@n8n/n8n-nodes-langchain.lmChatOpenAi",
        typeVersion=1.2,
        model={"__rl": True, "mode": "id", "value": "fake-model"},
        options={},
        credentials={"openAiApi": {"id": model_credential, "name": "Fake model"}},
    )
    wf.add("Python Bridge Tool", TOOL, operation="execute", credentials=CREDENTIAL)
    wf.wire("Webhook", "Agent")
    wf.connections["Model"] = {
        "ai_languageModel": [[{"node": "Agent", "type": "ai_languageModel", "index": 0}]]
    }
    wf.connections["Python Bridge Tool"] = {
        "ai_tool": [[{"node": "Agent", "type": "ai_tool", "index": 0}]]
    }
    return wf.document()


async def run_when_live(world: World, path: str, body: dict[str, Any]) -> Execution:
    """Call a webhook that was just activated (it goes live a moment later) and return its run."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            before = world.n8n.newest_execution_id()
            async with session.post(f"{world.n8n.url}/webhook/{path}", json=body) as response:
                await response.read()
                if response.status != 404:
                    return await world.n8n.execution(before)
            await asyncio.sleep(0.2)
    raise AssertionError(f"webhook {path} never went live")


async def test_an_ai_agent_calls_the_tool_with_a_processor_and_its_parameters(
    ui: Editor, world: World, fake_model: tuple[FakeModel, str]
) -> None:
    model, model_url = fake_model
    credential = await ui.create_credential(
        "Fake model", "openAiApi", {"apiKey": "sk-fake", "url": model_url}
    )
    path = f"e2e-agent-tool-{world.env.runtime.major}"
    saved = await ui.create_workflow(agent_workflow(path, credential))
    await ui.activate(saved)  # accepted: n8n validates the workflow and its tool node here

    question = {"question": "What is 2 + 3? Use the tool."}
    execution = await run_when_live(world, path, question)
    assert execution.status == "success", execution
    offered = model.requests[0]["tools"][0]["function"]
    assert offered["description"] == tool_description()
    assert set(offered["parameters"]["properties"]) == {"processor", "parameters"}
    assert offered["parameters"]["required"] == ["processor", "parameters"] or set(
        offered["parameters"]["required"]
    ) == {"processor", "parameters"}
    # The processor ran on one item — the agent's input item with the tool's input added — and
    # the model read the items it put out.
    [returned] = [m for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    [item] = orjson.loads(returned["content"])
    assert item["body"] == question
    assert {key: item[key] for key in TOOL_ARGUMENTS} == TOOL_ARGUMENTS
    assert item["rendered"] == "2 + 3 = 5"
    [answer] = execution.json("Agent")
    assert "2 + 3 = 5" in answer["output"], answer
