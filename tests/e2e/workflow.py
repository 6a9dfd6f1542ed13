"""Workflows for the end-to-end tests, built in code: a webhook (or manual) start, nodes, wires.

    wf = Workflow("e2eBatching", webhook="e2e-batching")
    wf.add("Items", CODE, jsCode="return [...]")
    wf.add("Bridge", BRIDGE, operation="execute", processingType="echo", onError="continueErrorOutput")
    wf.chain("Webhook", "Items", "Bridge")
    wf.wire("Bridge", "Failed", output=1)

A workflow started by a webhook answers when its last node has run (`responseMode: lastNode`), so a
test that calls it then reads the whole execution from n8n's database (`World.run`).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import orjson

CREDENTIAL_ID = "pythonBridgeCred"
CREDENTIAL = {"pythonBridgeApi": {"id": CREDENTIAL_ID, "name": "Python Bridge account"}}
# The nodes of this repository, as n8n names them when it loads them from N8N_CUSTOM_EXTENSIONS.
BRIDGE = "CUSTOM.pythonBridge"
TRIGGER = "CUSTOM.pythonBridgeTrigger"
CODE = "n8n-nodes-base.code"
NOOP = "n8n-nodes-base.noOp"
SET = "n8n-nodes-base.set"
WAIT = "n8n-nodes-base.wait"
WEBHOOK = "n8n-nodes-base.webhook"
MANUAL = "n8n-nodes-base.manualTrigger"

# The settings of a node that sit beside its parameters (not inside them).
NODE_SETTINGS = ("onError", "continueOnFail", "retryOnFail", "alwaysOutputData", "credentials")
TYPE_VERSIONS = {
    CODE: 2,
    WEBHOOK: 2,
    NOOP: 1,
    MANUAL: 1,
    BRIDGE: 1,
    TRIGGER: 1,
    SET: 3.4,
    WAIT: 1.1,
}


def _uuid(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


class Workflow:
    def __init__(self, workflow_id: str, *, webhook: str | None = None) -> None:
        """A workflow starting at a node called "Webhook" (POST /webhook/<path>, answering when
        its last node has run with that node's items) or, without a path, at "Start" (manual)."""
        self.id = workflow_id
        self.nodes: list[dict[str, Any]] = []
        self.connections: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
        if webhook is None:
            self.add("Start", MANUAL)
        else:
            self.add(
                "Webhook",
                WEBHOOK,
                webhookId=_uuid(workflow_id, "webhook"),
                httpMethod="POST",
                path=webhook,
                responseMode="lastNode",
                responseData="allEntries",
                options={},
            )

    def add(self, name: str, node_type: str, **parameters: Any) -> Workflow:
        """A node; `onError`, `credentials`, … are node settings, `webhookId` its own key, the rest
        its parameters. Bridge nodes get the test credential unless told otherwise."""
        node: dict[str, Any] = {
            "id": _uuid(self.id, name),
            "name": name,
            "type": node_type,
            "typeVersion": parameters.pop("typeVersion", TYPE_VERSIONS.get(node_type, 1)),
            "position": [220 * len(self.nodes), 0],
        }
        if node_type in (BRIDGE, TRIGGER):
            node["credentials"] = CREDENTIAL
        for key in (*NODE_SETTINGS, "webhookId"):
            if key in parameters:
                node[key] = parameters.pop(key)
        node["parameters"] = parameters
        self.nodes.append(node)
        return self

    def wire(self, source: str, target: str, output: int = 0) -> Workflow:
        outputs = self.connections.setdefault(source, {"main": []})["main"]
        while len(outputs) <= output:
            outputs.append([])
        outputs[output].append({"node": target, "type": "main", "index": 0})
        return self

    def chain(self, *names: str) -> Workflow:
        for source, target in itertools.pairwise(names):
            self.wire(source, target)
        return self

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.id,
            "active": False,
            "settings": {"executionOrder": "v1"},
            "nodes": self.nodes,
            "connections": self.connections,
        }


def items_code(items: list[dict[str, Any]]) -> str:
    """A Code node's JavaScript that outputs these items' json."""
    return f"return {orjson.dumps([{'json': i} for i in items]).decode()};"


def parameters_json(parameters: dict[str, Any]) -> str:
    return orjson.dumps(parameters).decode()


def set_fields(**expressions: str) -> dict[str, Any]:
    """A Set node's parameters: these string fields added to each item (its own fields kept)."""
    assignments = [
        {"id": _uuid("set", name), "name": name, "value": value, "type": "string"}
        for name, value in expressions.items()
    ]
    return {
        "mode": "manual",
        "assignments": {"assignments": assignments},
        "includeOtherFields": True,
        "options": {},
    }
