"""The n8n node package as `npm pack` makes it: what a user installs is the built nodes, the
credentials, their icons, the README and the LICENSE — nothing of the build's own (issue 18, 19).
npm shows the README outside the repository, so its links must not point into it relatively."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODES = ROOT / "n8n-nodes"


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
        "LICENSE",
        "dist/nodes/PythonBridge/PythonBridge.node.js",
        "dist/nodes/PythonBridgeTrigger/PythonBridgeTrigger.node.js",
        "dist/credentials/PythonBridgeApi.credentials.js",
    } <= files
    assert not [f for f in files if f.endswith(".tsbuildinfo") or f.startswith(("test", "src"))]
    # Built JavaScript and its declarations only: no TypeScript source.
    assert not [f for f in files if f.endswith(".ts") and not f.endswith(".d.ts")]
    assert (NODES / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert tarball["unpackedSize"] < 150_000, tarball["unpackedSize"]


def test_the_readmes_links_work_on_npm() -> None:
    """Each link of the packed README is an anchor of its own, a file the tarball holds, or an
    absolute URL; those into the repository name a path it has."""
    package = json.loads((NODES / "package.json").read_text())
    repository = package["repository"]["url"].removesuffix(".git")
    readme = (NODES / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert len(targets) > 5
    for target in targets:
        if target.startswith("#"):
            continue
        assert target.startswith("https://"), f"{target}: a relative link breaks on npm"
        if target.startswith(repository + "/"):
            path = re.sub(r"^(blob|tree)/main/", "", target.removeprefix(repository + "/"))
            assert (ROOT / path.split("#")[0]).exists(), f"{target}: the repository lacks it"
