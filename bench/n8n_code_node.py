"""Benchmark: 10,000 personalised sentences in one warm n8n — n8n's Python Code node against the
Python Bridge node with `template_render`.

One n8n 1.123 server (the recipe of shared/n8n-e2e.md: no task runners, so the Code node runs
Python in Pyodide) and one bridge daemon. Two workflows, each started through a webhook: a
JavaScript Code node makes 10,000 order records, then either a Python Code node builds one
sentence per item, or the Python Bridge node renders the same sentence with `template_render`.
Each workflow runs once to warm up, then `--runs` times, interleaved; the figures are the nodes'
own `executionTime` from n8n's execution data. Target: the bridge node >= 10x faster.

    bash bench/run.sh n8n_code_node [--items 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import SECRET, bridge_env, free_port, start_bridge
from tests.e2e.n8n import RUNTIMES, N8n, missing

PYTHON_CODE = """out = []
for item in _input.all():
    j = item.json
    sentence = (f"Dear {j.first_name} {j.last_name}, your order {j.order_id}"
                f" of {j.amount:.2f} EUR has shipped.")
    out.append({"json": {**j.to_py(), "sentence": sentence}})
return out
"""
TEMPLATE = (
    "Dear {{ first_name }} {{ last_name }}, your order {{ order_id }} of "
    "{{ '%.2f'|format(amount) }} EUR has shipped."
)


def records_code(count: int) -> str:
    return (
        f"return Array.from({{ length: {count} }}, (_, n) => ({{ json: {{"
        " first_name: 'First' + n, last_name: 'Last' + n,"
        " order_id: 'A-' + String(n).padStart(6, '0'), amount: n * 1.25 } }));"
    )


def workflow(workflow_id: str, path: str, count: int, worker: dict[str, Any]) -> dict[str, Any]:
    nodes = [
        {
            "id": f"{workflow_id}-1",
            "name": "Webhook",
            "type": "n8n-nodes-base.webhook",
            "typeVersion": 2,
            "position": [0, 0],
            "webhookId": f"00000000-0000-4000-8000-{abs(hash(path)) % 10**12:012d}",
            "parameters": {
                "httpMethod": "POST",
                "path": path,
                "responseMode": "lastNode",
                "responseData": "noData",
                "options": {},
            },
        },
        {
            "id": f"{workflow_id}-2",
            "name": "Records",
            "type": "n8n-nodes-base.code",
            "typeVersion": 2,
            "position": [200, 0],
            "parameters": {"jsCode": records_code(count)},
        },
        {"id": f"{workflow_id}-3", "position": [400, 0], **worker},
    ]
    return {
        "id": workflow_id,
        "name": workflow_id,
        "active": False,
        "settings": {"executionOrder": "v1"},
        "nodes": nodes,
        "connections": {
            "Webhook": {"main": [[{"node": "Records", "type": "main", "index": 0}]]},
            "Records": {"main": [[{"node": worker["name"], "type": "main", "index": 0}]]},
        },
    }


def node_time(database: Path, node: str) -> tuple[float, int]:
    """(executionTime ms, output items) of `node` in the newest execution that ran it."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT d.data FROM execution_data d JOIN execution_entity e ON e.id = d.executionId"
            " ORDER BY e.id DESC LIMIT 5"
        ).fetchall()
    for (raw,) in rows:
        flat = orjson.loads(raw)
        task = _find_task(flat, node)
        if task is not None:
            return task
    raise RuntimeError(f"no execution of {node!r} found")


def _find_task(flat: list[Any], node: str) -> tuple[float, int] | None:
    """Read n8n's `flatted` execution data: objects refer to other entries by index strings."""

    def at(ref: Any) -> Any:
        return flat[int(ref)] if isinstance(ref, str) and ref.isdigit() else ref

    run_data = at(at(at(flat[0])["resultData"])["runData"])
    if node not in run_data:
        return None
    task = at(at(run_data[node])[0])
    if at(task["executionStatus"]) != "success":
        raise RuntimeError(f"{node} did not succeed: {task}")
    items = at(at(at(task["data"])["main"])[0])
    return float(task["executionTime"]), len(items)


async def trigger(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, json={}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")


async def main_async(args: argparse.Namespace) -> None:
    runtime = RUNTIMES[0]  # n8n 1.123 (its Code node runs Python in Pyodide)
    reason = missing(runtime)
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        bridge, bridge_url = start_bridge(bridge_env(base / "bridge"), base / "bridge.log")
        n8n = N8n(runtime, base / "n8n", free_port())
        n8n.home.mkdir()
        try:
            n8n.import_json(
                "credentials",
                [
                    {
                        "id": "benchBridgeCred",
                        "name": "bridge",
                        "type": "pythonBridgeApi",
                        "data": {
                            "baseUrl": bridge_url,
                            "authentication": "jwtSecret",
                            "jwtSecret": SECRET,
                        },
                    }
                ],
            )
            code_node = {
                "name": "Python Code",
                "type": "n8n-nodes-base.code",
                "typeVersion": 2,
                "parameters": {"language": "python", "pythonCode": PYTHON_CODE},
            }
            bridge_node = {
                "name": "Python Bridge",
                "type": "CUSTOM.pythonBridge",
                "typeVersion": 1,
                "credentials": {"pythonBridgeApi": {"id": "benchBridgeCred", "name": "bridge"}},
                "parameters": {
                    "operation": "execute",
                    "processingType": "template_render",
                    "parametersJson": orjson.dumps(
                        {"template": TEMPLATE, "output_field": "sentence"}
                    ).decode(),
                    "options": {"batchSize": args.batch_size, "parallelBatches": 2},
                },
            }
            n8n.import_json(
                "workflow",
                [
                    workflow("benchCodeNode001", "bench-code", args.items, code_node),
                    workflow("benchBridgeNode01", "bench-bridge", args.items, bridge_node),
                ],
            )
            n8n.activate(["benchCodeNode001", "benchBridgeNode01"])
            await n8n.start()
            database = n8n.home / ".n8n" / "database.sqlite"
            times: dict[str, list[float]] = {"Python Code": [], "Python Bridge": []}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
                for round_ in range(args.runs + 1):  # the first round warms both up
                    for node, path in (
                        ("Python Code", "bench-code"),
                        ("Python Bridge", "bench-bridge"),
                    ):
                        started = time.perf_counter()
                        await trigger(session, f"{n8n.url}/webhook/{path}")
                        wall = time.perf_counter() - started
                        ms, count = node_time(database, node)
                        assert count == args.items, f"{node} gave {count} items"
                        label = "warm-up" if round_ == 0 else f"run {round_}"
                        print(f"{label}: {node} {ms:,.0f} ms (workflow {wall * 1000:,.0f} ms)")
                        if round_:
                            times[node].append(ms)
        finally:
            await n8n.stop()
            bridge.terminate()
            bridge.wait(30)
            if args.show_bridge_log:
                for line in (base / "bridge.log").read_text().splitlines():
                    if "/api/v1/workflow/execute" in line and "duration_ms" in line:
                        record = orjson.loads(line)
                        print("bridge:", record["msg"], record["duration_ms"], "ms")
    code, bridged = (statistics.median(times[n]) for n in ("Python Code", "Python Bridge"))
    print(f"\n{args.items:,} items, {args.runs} runs each after a warm-up, n8n 1.123.81\n")
    print("| node | executionTime ms, each run | median ms |")
    print("|---|---|---|")
    for node in times:
        runs = ", ".join(f"{t:,.0f}" for t in times[node])
        print(f"| {node} | {runs} | {statistics.median(times[node]):,.0f} |")
    print(f"\nPython Bridge is {code / bridged:.1f} times as fast as the Python Code node")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2500)
    parser.add_argument("--show-bridge-log", action="store_true", help="each request's time")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
