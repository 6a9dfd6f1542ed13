"""The n8n node package as `npm pack` makes it: what a user installs is the built nodes, the
credentials, their icons and the README — nothing of the build's own (issue 18, 19)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODES = Path(__file__).resolve().parent.parent / "n8n-nodes"


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_the_tarball_holds_the_nodes_and_nothing_of_the_build() -> None:
    if not (NODES / "dist" / "nodes" / "PythonBridge" / "PythonBridge.node.js").exists():
        pytest.fail("the nodes are not built: run scripts/test.sh (npm run build in n8n-nodes/)")
    packed = subprocess.run(
        ["npm", "pack", "--dry-run", "--json", "--loglevel=error"],
        cwd=NODES,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    [tarball] = json.loads(packed.stdout)
    files = {entry["path"] for entry in tarball["files"]}
    assert {
        "package.json",
        "README.md",
        "dist/nodes/PythonBridge/PythonBridge.node.js",
        "dist/nodes/PythonBridgeTrigger/PythonBridgeTrigger.node.js",
        "dist/credentials/PythonBridgeApi.credentials.js",
    } <= files
    assert not [f for f in files if f.endswith(".tsbuildinfo") or f.startswith(("test", "src"))]
    assert tarball["unpackedSize"] < 150_000, tarball["unpackedSize"]
