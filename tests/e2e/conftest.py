"""One real n8n and one real bridge per n8n version, shared by every end-to-end test module.

A module adds its workflows with an `async def e2e_workflows(env: Env) -> list[dict]`: before n8n
starts, the `world` fixture imports the workflows of every collected module, and publishes
(activates) those started by a webhook or a trigger. A module may also give n8n environment
variables, with a `def e2e_n8n_environment() -> dict[str, str]`. Tests call a webhook workflow with
`world.run(path, body)` and get its whole execution back, read from n8n's database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bridge.auth import mint_token
from bridge.settings import Settings
from tests import smtp_server
from tests.daemon import Daemon
from tests.e2e.n8n import RUNTIMES, STOPPED, Execution, N8n, Runtime, missing
from tests.e2e.workflow import CREDENTIAL_ID, MANUAL, WEBHOOK

SECRET = "an-e2e-secret-that-is-long-enough-0123456789"
CALLBACK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# The failed-jobs trigger watches every workflow: a JWT-secret credential would limit it to its
# own, so it has a credential of its own with an operator's token (no `workflows` claim).
MONITOR_CREDENTIAL_ID = "pythonBridgeMonitor"
# A JWT-secret credential without a Callback Secret: the node cannot tell the bridge's callbacks
# from anyone else's.
UNSIGNED_CREDENTIAL_ID = "pythonBridgeNoSecret"
SETTINGS = Settings.model_validate({"jwt_secret": SECRET})
MODULES = pytest.StashKey[list[ModuleType]]()


def bridge_headers(
    scopes: str = "execute,status,admin", workflows: list[str] | None = None
) -> dict[str, str]:
    token = mint_token(SETTINGS, scopes.split(","), 300, workflows=workflows)
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Sink:
    """Where workflows' HTTP Request nodes post (`<sink url>/<name>`)."""

    received: dict[str, list[Any]] = field(default_factory=dict)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.setdefault(request.match_info["name"], []).append(await request.json())
        return web.Response(text="ok")

    async def wait(self, name: str, count: int, timeout: float = 90) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.received.get(name, [])) < count:
            assert time.monotonic() < deadline, f"{name}: {self.received.get(name)}"
            await asyncio.sleep(0.2)
        return self.received[name]


@dataclass(frozen=True)
class Env:
    """What a module's workflows may refer to (known before n8n starts)."""

    runtime: Runtime
    bridge_url: str
    n8n_url: str
    sink_url: str


@dataclass
class World:
    env: Env
    n8n: N8n
    bridge: Daemon
    sink: Sink
    mail: smtp_server.Sink

    async def run(
        self, path: str, body: Any = None, timeout: float = 120, states: tuple[str, ...] = STOPPED
    ) -> Execution:
        """Start the workflow of webhook `path` and wait for its execution to stop (or to reach
        one of `states`)."""
        before = self.n8n.newest_execution_id()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(f"{self.n8n.url}/webhook/{path}", json=body or {}) as response,
        ):
            await response.read()  # a failed workflow answers 500: its execution tells why
        workflow_id = self.n8n.webhook_workflow(path)
        return await self.n8n.execution(before, workflow_id, timeout=timeout, states=states)


def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    modules = {id(m): m for m in (getattr(i, "module", None) for i in items) if m is not None}
    session.config.stash[MODULES] = [m for m in modules.values() if hasattr(m, "e2e_workflows")]


def _started_by_itself(workflow: dict[str, Any]) -> bool:
    """A workflow n8n must activate: a webhook or a trigger starts it, not a person."""
    return any(
        node["type"] == WEBHOOK or (node["type"].endswith("Trigger") and node["type"] != MANUAL)
        for node in workflow["nodes"]
    )


def _credentials(bridge_url: str) -> list[dict[str, Any]]:
    return [
        {
            "id": CREDENTIAL_ID,
            "name": "Python Bridge account",
            "type": "pythonBridgeApi",
            "data": {
                "baseUrl": bridge_url,
                "authentication": "jwtSecret",
                "jwtSecret": SECRET,
                "audience": "n8n-bridge",
                "issuer": "n8n-bridge",
                "callbackSecret": CALLBACK_SECRET,
            },
        },
        {
            "id": UNSIGNED_CREDENTIAL_ID,
            "name": "Python Bridge without callback secret",
            "type": "pythonBridgeApi",
            "data": {"baseUrl": bridge_url, "authentication": "jwtSecret", "jwtSecret": SECRET},
        },
        {
            "id": MONITOR_CREDENTIAL_ID,
            "name": "Python Bridge monitor",
            "type": "pythonBridgeApi",
            "data": {
                "baseUrl": bridge_url,
                "authentication": "bearerToken",
                "token": mint_token(SETTINGS, ["admin"], 86400),
                "callbackSecret": CALLBACK_SECRET,
            },
        },
    ]


@pytest_asyncio.fixture(
    scope="session", loop_scope="session", params=RUNTIMES, ids=[r.version for r in RUNTIMES]
)
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    runtime: Runtime = request.param
    reason = missing(runtime)
    if reason:
        pytest.fail(reason)
    # What the modules' workflows need of n8n's environment (harmless to the others').
    environment = {
        name: value
        for module in request.config.stash[MODULES]
        if hasattr(module, "e2e_n8n_environment")
        for name, value in module.e2e_n8n_environment().items()
    }
    base = tmp_path_factory.mktemp(f"e2e-{runtime.version}")
    sink = Sink()
    app = web.Application()
    app.router.add_post("/{name}", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    sink.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    mail = smtp_server.Sink()
    smtp = smtp_server.start(mail)
    bridge = await Daemon(
        {
            "BRIDGE_DATA_DIR": str(base / "bridge"),
            "BRIDGE_JWT_SECRET": SECRET,
            "BRIDGE_CALLBACK_SECRET": CALLBACK_SECRET,
            "BRIDGE_PROCESSORS": "tests.plugins.sample",
            "BRIDGE_SMTP_HOST": "127.0.0.1",
            "BRIDGE_SMTP_PORT": str(smtp.port),
            "BRIDGE_SMTP_TLS": "none",
            "BRIDGE_RETRY_BASE_S": "0.2",
        }
    ).start()
    n8n = N8n(runtime, base / "n8n", smtp_server.free_port(), environment)
    n8n.home.mkdir()
    env = Env(runtime, bridge.url, n8n.url, sink.url)
    try:
        n8n.import_json("credentials", _credentials(bridge.url))
        workflows = [
            workflow
            for module in request.config.stash[MODULES]
            for workflow in await module.e2e_workflows(env)
        ]
        n8n.import_json("workflow", workflows)
        n8n.activate([w["id"] for w in workflows if _started_by_itself(w)])
        await n8n.start()
        await n8n.until_published()
        yield World(env, n8n, bridge, sink, mail)
    finally:
        await n8n.stop()
        await bridge.kill()
        smtp.stop()
        await runner.cleanup()
