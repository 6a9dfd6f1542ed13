"""Benchmark: 10,000 items through three nodes in one warm n8n — the Python Bridge node
(Execute, `template_render`), a Code node doing the same work, and a NoOp node.

For each n8n version (`--n8n 2.41.1`, `--n8n 1.123.81`; default both, one after the other) one
n8n server and one bridge daemon. Three workflows, each started through a webhook: a JavaScript
Code node makes the order records, then one of
  (a) the Python Bridge node renders a sentence per item with `template_render` (its default
      batching unless --batch-size / --parallel say otherwise);
  (b) a Code node builds the same sentence: JavaScript in a task runner on n8n 2.x, Python in
      Pyodide on 1.123 (2.x's native Python runner ships only in n8n's Docker image);
  (c) a NoOp node: n8n's own cost of running a node on these items.
Each workflow runs once to warm up, then `--runs` times, interleaved; the figures are the nodes'
own `executionTime` from n8n's execution data.

For (a) the bridge's own processing is read from its access log: each execute request's
`duration_ms` (the handler's time, which its `Server-Timing` total also reports, plus the
middleware), ending at the line's timestamp. The bridge's share is the wall-clock union of those
intervals — the time during which it was working on at least one of the node's requests. Two
batches are in flight at once, so the sum of the durations counts the time they overlap twice,
while the bridge's Python runs one thread at a time (the GIL) and does not get through two
requests faster than one after the other: the union is its real share. The node's own share —
encoding, batching, n8n's HTTP helper, decoding, pairing — is (a) minus that union. Targets:
(a) at least 2x faster than (b), and the node's own share at most 25 % of (a).

    bash bench/run.sh n8n_nodes [--n8n 2.41.1|1.123.81] [--items 10000] [--runs 3]
        [--batch-size N] [--parallel N] [--cpu-prof DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import SECRET, bridge_env, free_port, start_bridge
from tests.e2e.n8n import RUNTIMES, N8n, Runtime, missing

EXECUTE_PATH = "/api/v1/workflow/execute"
PYTHON_CODE = """out = []
for item in _input.all():
    j = item.json
    sentence = (f"Dear {j.first_name} {j.last_name}, your order {j.order_id}"
                f" of {j.amount:.2f} EUR has shipped.")
    out.append({"json": {**j.to_py(), "sentence": sentence}})
return out
"""
JS_CODE = """return $input.all().map(({ json: j }) => ({ json: { ...j,
  sentence: `Dear ${j.first_name} ${j.last_name}, your order ${j.order_id}`
    + ` of ${j.amount.toFixed(2)} EUR has shipped.` } }));
"""
TEMPLATE = (
    "Dear {{ first_name }} {{ last_name }}, your order {{ order_id }} of "
    "{{ '%.2f'|format(amount) }} EUR has shipped."
)
BRIDGE, CODE, NOOP = "Python Bridge", "Code", "NoOp"


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
            "webhookId": f"00000000-0000-4000-8000-{sum(map(ord, path)) * 7919:012d}",
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


def workers(runtime: Runtime, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The three nodes under test, by name."""
    options: dict[str, int] = {}
    if args.batch_size:
        options["batchSize"] = args.batch_size
    if args.parallel:
        options["parallelBatches"] = args.parallel
    code = (
        {"language": "python", "pythonCode": PYTHON_CODE}
        if runtime.major == 1  # Pyodide; 2.x's Python runs only in n8n's Docker image
        else {"language": "javaScript", "jsCode": JS_CODE}
    )
    return {
        BRIDGE: {
            "type": "CUSTOM.pythonBridge",
            "typeVersion": 1,
            "credentials": {"pythonBridgeApi": {"id": "benchBridgeCred", "name": "bridge"}},
            "parameters": {
                "operation": "execute",
                "processingType": "template_render",
                "parametersJson": orjson.dumps(
                    {"template": TEMPLATE, "output_field": "sentence"}
                ).decode(),
                "options": options,
            },
        },
        CODE: {"type": "n8n-nodes-base.code", "typeVersion": 2, "parameters": code},
        NOOP: {"type": "n8n-nodes-base.noOp", "typeVersion": 1, "parameters": {}},
    }


@dataclass
class BridgeShare:
    """The bridge's execute requests that ended within one run."""

    durations: list[float] = field(default_factory=list)
    union_ms: float = 0.0


def bridge_requests(log: Path) -> list[tuple[float, float]]:
    """(start, end) in epoch seconds of each execute request in the bridge's access log: a
    line is written when the request's handling ends, and carries its duration."""
    spans = []
    for line in log.read_text().splitlines():
        if EXECUTE_PATH not in line or "duration_ms" not in line:
            continue
        record = orjson.loads(line)
        end = datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
        spans.append((end - record["duration_ms"] / 1000, end))
    return spans


def share(spans: list[tuple[float, float]], window: tuple[float, float]) -> BridgeShare:
    """The requests that ended inside `window`, and the union of their intervals."""
    # The log's timestamps are whole milliseconds: a request's end may read up to 1 ms late.
    inside = sorted((s, e) for s, e in spans if window[0] <= e <= window[1] + 0.002)
    result = BridgeShare(durations=[(e - s) * 1000 for s, e in inside])
    covered_to = float("-inf")
    for start, end in inside:
        start = max(start, covered_to)
        if end > start:
            result.union_ms += (end - start) * 1000
        covered_to = max(covered_to, end)
    return result


class ProfiledN8n(N8n):
    """An n8n server that writes V8 CPU profiles (of the main process and its task runners);
    made after the CLI runs (import, activate), which are not profiled."""

    def __init__(self, runtime: Runtime, home: Path, port: int, profile_dir: Path) -> None:
        super().__init__(runtime, home, port)
        self.profile_dir = profile_dir

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["NODE_OPTIONS"] = " ".join(
            [env.get("NODE_OPTIONS", ""), f"--cpu-prof --cpu-prof-dir={self.profile_dir}"]
        ).strip()
        return env


async def trigger(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, json={}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")


async def bench_version(runtime: Runtime, args: argparse.Namespace) -> str:
    """Run the three workflows in one n8n of `runtime`; the report's section, as Markdown."""
    reason = missing(runtime)
    if reason:
        raise SystemExit(reason)
    nodes = workers(runtime, args)
    ids = {BRIDGE: "benchBridgeNode01", CODE: "benchCodeNode0001", NOOP: "benchNoOpNode0001"}
    paths = {BRIDGE: "bench-bridge", CODE: "bench-code", NOOP: "bench-noop"}
    times: dict[str, list[float]] = {name: [] for name in nodes}
    windows: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        bridge_log = base / "bridge.log"
        bridge, bridge_url = start_bridge(bridge_env(base / "bridge"), bridge_log)
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
            n8n.import_json(
                "workflow",
                [
                    workflow(ids[name], paths[name], args.items, {"name": name, **node})
                    for name, node in nodes.items()
                ],
            )
            n8n.activate(list(ids.values()))
            if args.cpu_prof is not None:
                args.cpu_prof.mkdir(parents=True, exist_ok=True)
                n8n = ProfiledN8n(runtime, n8n.home, n8n.port, args.cpu_prof.resolve())
            await n8n.start()
            await n8n.until_published()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
                for round_ in range(args.runs + 1):  # the first round warms every node up
                    for name in nodes:
                        before = n8n.newest_execution_id()
                        started, wall = time.time(), time.perf_counter()
                        await trigger(session, f"{n8n.url}/webhook/{paths[name]}")
                        wall = time.perf_counter() - wall
                        run = await n8n.execution(before, ids[name], states=("success", "error"))
                        task = run.task(name)
                        if task["executionStatus"] != "success":
                            raise RuntimeError(f"{name} did not succeed: {task}")
                        ms, count = float(task["executionTime"]), len(run.output(name))
                        assert count == args.items, f"{name} gave {count} items"
                        label = "warm-up" if round_ == 0 else f"run {round_}"
                        print(
                            f"{runtime.version} {label}: {name} {ms:,.0f} ms"
                            f" (workflow {wall * 1000:,.0f} ms)",
                            flush=True,
                        )
                        if round_:
                            times[name].append(ms)
                            if name == BRIDGE:
                                windows.append((started, time.time()))
        finally:
            await n8n.stop()
            bridge.terminate()
            bridge.wait(30)
        spans = bridge_requests(bridge_log)
    return report(runtime, args, times, [share(spans, window) for window in windows])


def report(
    runtime: Runtime,
    args: argparse.Namespace,
    times: dict[str, list[float]],
    shares: list[BridgeShare],
) -> str:
    median = statistics.median
    code_label = "JavaScript, task runner" if runtime.major >= 2 else "Python, Pyodide"
    labels = {
        BRIDGE: "(a) Python Bridge, Execute, `template_render`",
        CODE: f"(b) Code node ({code_label})",
        NOOP: "(c) NoOp",
    }
    lines = [
        f"### n8n {runtime.version}: {args.items:,} items, {args.runs} runs each after a warm-up",
        "",
        "| node | executionTime ms, each run | median ms |",
        "|---|---|---|",
    ]
    for name, label in labels.items():
        runs = ", ".join(f"{t:,.0f}" for t in times[name])
        lines.append(f"| {label} | {runs} | {median(times[name]):,.0f} |")
    a, b = median(times[BRIDGE]), median(times[CODE])
    lines += [
        "",
        "| run | (a) ms | bridge requests | their durations summed, ms"
        " | bridge processing (union), ms | node's own share = (a) - union, ms | share of (a) |",
        "|---|---|---|---|---|---|---|",
    ]
    own = []
    for index, (total, bridge) in enumerate(zip(times[BRIDGE], shares, strict=True), 1):
        own.append(total - bridge.union_ms)
        lines.append(
            f"| {index} | {total:,.0f} | {len(bridge.durations)} | {sum(bridge.durations):,.0f}"
            f" | {bridge.union_ms:,.0f} | {own[-1]:,.0f} | {own[-1] / total:.0%} |"
        )
    union = median(s.union_ms for s in shares)
    lines += [
        f"| median | {a:,.0f} | | | {union:,.0f} | {median(own):,.0f}"
        f" | {median(o / t for o, t in zip(own, times[BRIDGE], strict=True)):.0%} |",
        "",
        f"(b) / (a) = {b:,.0f} / {a:,.0f} = {b / a:.2f}x (target ≥ 2x); "
        f"the node's own share = {a:,.0f} - {union:,.0f} = {a - union:,.0f} ms"
        f" = {(a - union) / a:.0%} of (a) (target ≤ 25 %), from the medians.",
        "",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    chosen = [r for r in RUNTIMES if args.n8n in (None, r.version)]
    chosen.sort(key=lambda r: -r.major)  # the current major first
    sections = [await bench_version(runtime, args) for runtime in chosen]
    print()
    print("\n".join(sections))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--n8n", choices=[r.version for r in RUNTIMES], help="one version (default: both)"
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="the node's Batch Size (default: its own)")
    parser.add_argument("--parallel", type=int, help="Batches in Parallel (default: its own)")
    parser.add_argument(
        "--cpu-prof",
        type=lambda p: Path(p).resolve(),
        metavar="DIR",
        help="V8 CPU profiles of the n8n server",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
