"""n8n-nodes/README.md states the Python Bridge node's Execute defaults as the node has them."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.settings import Settings

NODES = Path(__file__).resolve().parent.parent / "n8n-nodes"


def option_default(name: str) -> str:
    """The `default` of the node's option `name` in description.ts (the editor's value, which
    n8n-nodes/test/batching.test.ts holds equal to what Execute does)."""
    source = (NODES / "nodes" / "PythonBridge" / "description.ts").read_text()
    found = re.search(rf"name: '{name}',.*?default: (\d+),", source, re.S)
    assert found, f"no default for {name} in description.ts"
    return found.group(1)


def test_the_readme_states_the_batching_defaults() -> None:
    readme = " ".join((NODES / "README.md").read_text().split())
    batch, parallel = option_default("batchSize"), option_default("parallelBatches")
    assert f"*Batch Size* ({batch}) and *Batches in Parallel* ({parallel})" in readme
    body = Settings.model_fields["max_body_bytes"].default
    assert f"`BRIDGE_MAX_BODY_BYTES` ({body // 2**20} MiB by default" in readme
    assert f"{body // int(batch) // 1000} KB per item at {batch})" in readme
