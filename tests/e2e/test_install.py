"""The node package installed as a user installs it (n8n-nodes/README.md, *Install*): its tarball,
made by `npm pack`, installed with npm into a fresh n8n's `~/.n8n/nodes` — in 1.123 and in 2.x.
That n8n loads the nodes under the package's names and runs them against the shared bridge.
The Docker route's Dockerfile is checked to install the same tarball the same way.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests import smtp_server
from tests.e2e.conftest import SECRET, World
from tests.e2e.editor import editor
from tests.e2e.n8n import RUNTIMES, N8n
from tests.e2e.workflow import Workflow

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "n8n-nodes"
NAME = "n8n-nodes-python-bridge"
# The commands n8n-nodes/README.md gives (the tarball's path aside); the test runs them as written.
# --omit=peer: npm would otherwise install the peer n8n-workflow beside the nodes, and the nodes
# would use that copy instead of n8n's own.
INSTALL = "mkdir -p ~/.n8n/nodes && (cd ~/.n8n/nodes && npm install --omit=peer {tarball})"
DOCKERFILE = ROOT / "deploy" / "n8n-with-bridge-nodes.Dockerfile"
README = PACKAGE / "README.md"
PACK_FOLDER = "/tmp/bridge-nodes"  # where the README and the Dockerfile's comment pack to
CREDENTIAL_ID = "installedBridgeCred"


class InstalledN8n(N8n):
    """An n8n with only what its user folder holds: no N8N_CUSTOM_EXTENSIONS."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        del env["N8N_CUSTOM_EXTENSIONS"]
        return env


@dataclass
class Installed:
    n8n: InstalledN8n
    tarball: Path


def pack(destination: Path) -> Path:
    """`npm pack` of the built package, into `destination` (not into the repository)."""
    done = subprocess.run(
        ["npm", "pack", "--json", "--pack-destination", str(destination)],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        check=True,
    )
    (packed,) = orjson.loads(done.stdout)
    return destination / str(packed["filename"])


def echo_workflow() -> dict[str, Any]:
    wf = Workflow("installedEcho")
    wf.add("Items", "n8n-nodes-base.code", jsCode="return [{json: {n: 1}}, {json: {n: 2}}];")
    wf.add(
        "Bridge",
        f"{NAME}.pythonBridge",
        operation="execute",
        processingType="echo",
        credentials={"pythonBridgeApi": {"id": CREDENTIAL_ID, "name": "Python Bridge"}},
    )
    wf.chain("Start", "Items", "Bridge")
    return wf.document()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def installed(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Installed]:
    runtime = world.env.runtime
    base = tmp_path_factory.mktemp(f"installed-{runtime.version}")
    tarball = await asyncio.to_thread(pack, base)
    n8n = InstalledN8n(runtime, base / "home", smtp_server.free_port())
    n8n.home.mkdir()
    command = INSTALL.format(tarball=shlex.quote(str(tarball)))
    await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", command],
        env={**os.environ, "HOME": str(n8n.home)},  # ~ is the user folder n8n uses
        capture_output=True,
        check=True,
    )
    credential = {
        "id": CREDENTIAL_ID,
        "name": "Python Bridge",
        "type": "pythonBridgeApi",
        "data": {"baseUrl": world.bridge.url, "authentication": "jwtSecret", "jwtSecret": SECRET},
    }
    await asyncio.to_thread(n8n.import_json, "credentials", [credential])
    await asyncio.to_thread(n8n.import_json, "workflow", [echo_workflow()])
    try:
        yield Installed(n8n, tarball)
    finally:
        await n8n.stop()


async def test_npm_installs_the_tarball_without_its_peer(installed: Installed) -> None:
    modules = installed.n8n.home / ".n8n" / "nodes" / "node_modules"
    assert sorted(p.name for p in modules.iterdir() if not p.name.startswith(".")) == [NAME]
    assert (modules / NAME / "dist" / "nodes" / "PythonBridge" / "PythonBridge.node.js").exists()


async def test_the_installed_nodes_run_under_the_package_s_names(installed: Installed) -> None:
    run = await asyncio.to_thread(installed.n8n.execute, "installedEcho")
    [task] = run["data"]["resultData"]["runData"]["Bridge"]
    assert task["executionStatus"] == "success", task
    assert [item["json"] for item in task["data"]["main"][0]] == [{"n": 1}, {"n": 2}]


async def test_the_editor_lists_the_installed_nodes_and_credentials(installed: Installed) -> None:
    await installed.n8n.start()
    async with editor(installed.n8n.url) as ui:
        nodes = {t["name"] for t in await ui.node_types()}
        credentials = {c["name"] for c in await ui.call("GET", "/types/credentials.json")}
    assert {f"{NAME}.pythonBridge", f"{NAME}.pythonBridgeTrigger", f"{NAME}.pythonBridgeTool"} <= (
        nodes
    )
    assert not {n for n in nodes if n.startswith("CUSTOM.")}
    assert "pythonBridgeApi" in credentials


async def test_the_docker_route_installs_the_same_tarball_into_the_tested_n8n(
    installed: Installed,
) -> None:
    dockerfile = DOCKERFILE.read_text()
    tested = {r.version for r in RUNTIMES}
    (base,) = re.findall(r"^ARG N8N_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert base in tested
    assert re.search(r"^FROM n8nio/n8n:\$\{N8N_VERSION\}$", dockerfile, re.MULTILINE)
    name = installed.tarball.name
    assert f"COPY --chown=node:node {name} /tmp/{name}" in dockerfile
    assert INSTALL.format(tarball=f"/tmp/{name}") in dockerfile


async def test_the_readme_installs_the_tarball_npm_pack_makes(installed: Installed) -> None:
    readme = README.read_text()
    # npm pack writes into a folder that exists: the README makes it first
    assert f"mkdir -p {PACK_FOLDER} && (cd n8n-nodes && npm ci && npm run build" in readme
    assert f"npm pack --pack-destination {PACK_FOLDER})" in readme
    assert INSTALL.format(tarball=f"{PACK_FOLDER}/{installed.tarball.name}") in readme
    assert f"`{installed.tarball.name}`" in readme
    assert f"-t n8n-with-bridge-nodes {PACK_FOLDER}" in readme
