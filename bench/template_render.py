"""Benchmark: 10,000 items through `template_render` in one sync request.

Reports the bridge's own Server-Timing phases (median of the runs): decode (read the body, parse
and validate it), convert (items to Python records, parameters), run (the processor), encode
(results to JSON) and total, the handler's time. Targets: total <= 150 ms, with decode + convert +
encode <= 25 % of it.

The machine's speed swings by 2-3x from minute to minute, so each request is paired with a
reference run of the same work by a bare script in this process — orjson, the same Jinja sandbox,
a loop — and the ratio of the two is reported too.

    bash bench/run.sh template_render [--items 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from jinja2 import ChainableUndefined

from bench.common import bridge_env, start_bridge, token
from bridge.processors.template_sandbox import Sandbox

TEMPLATE = """Dear {{ first_name }} {{ last_name }},

thank you for order {{ order_id }} of {{ "%.2f"|format(amount) }} EUR.
{% if vip %}As a VIP customer you ship for free.{% endif %}
We will write to {{ email|lower }} when it leaves our warehouse.
"""


def items(count: int) -> list[dict[str, object]]:
    return [
        {
            "json": {
                "first_name": f"First{n}",
                "last_name": f"Last{n}",
                "email": f"Person.{n}@Example.com",
                "order_id": f"A-{n:06d}",
                "amount": n * 1.25,
                "vip": n % 7 == 0,
            }
        }
        for n in range(count)
    ]


def post(url: str, bearer: str, body: bytes) -> tuple[dict[str, float], int, float]:
    request = urllib.request.Request(
        url + "/api/v1/workflow/execute",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = orjson.loads(response.read())
        timing = response.headers["Server-Timing"]
    client_ms = (time.perf_counter() - started) * 1000
    phases = {name: float(value) for name, value in (p.split(";dur=") for p in timing.split(", "))}
    return phases, len(answer["items"]), client_ms


def reference(body: bytes) -> float:
    """Milliseconds for the same work done bare: parse, render every item, encode."""
    started = time.perf_counter()
    request = orjson.loads(body)
    template = Sandbox(undefined=ChainableUndefined).from_string(request["parameters"]["template"])
    rendered = [
        {"json": {**item["json"], "rendered": template.render(item["json"])}}
        for item in request["items"]
    ]
    orjson.dumps(rendered)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    body = orjson.dumps(
        {
            "processing_type": "template_render",
            "items": items(args.items),
            "parameters": {"template": TEMPLATE},
        }
    )
    with tempfile.TemporaryDirectory() as directory:
        env = bridge_env(Path(directory))
        process, url = start_bridge(env, Path(directory) / "bridge.log")
        try:
            for _ in range(2):  # warm-up: imports, template compilation, caches
                post(url, token(), body)
            runs, references = [], []
            for _ in range(args.runs):
                runs.append(post(url, token(), body))
                references.append(reference(body))
        finally:
            process.terminate()
            process.wait(30)
    assert all(count == args.items for _, count, _ in runs), "some items did not render"
    phases = {name: statistics.median(r[0][name] for r in runs) for name in runs[0][0]}
    overhead = phases["decode"] + phases["convert"] + phases["encode"]
    print(f"\n{args.items:,} items, {len(body) / 1e6:.1f} MB request, median of {args.runs} runs\n")
    print("| phase | ms |")
    print("|---|---|")
    for name, ms in phases.items():
        print(f"| {name} | {ms:.1f} |")
    print(f"| client round trip | {statistics.median(r[2] for r in runs):.1f} |")
    bare = statistics.median(references)
    print(f"| reference: bare script, same work | {bare:.1f} |")
    print(
        f"\ndecode + convert + encode: {overhead:.1f} ms = {overhead / phases['total']:.0%} "
        "of the total"
    )
    print(f"bridge total / bare script: {phases['total'] / bare:.2f}")


if __name__ == "__main__":
    main()
