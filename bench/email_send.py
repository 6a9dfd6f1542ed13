"""Benchmark: email_send to a local SMTP sink — messages per second, one request of N items.

The bridge and the sink (aiosmtpd, `bench/smtp_sink.py`) run as separate processes. Each row is a
fresh bridge: pooled connections (1 and 4) with idempotency keys, and 4 connections without keys
(no ledger writes). Messages per second = items / the bridge's `run` phase (Server-Timing); the
sink's count confirms every message arrived once. Target: >= 500 messages/s with connection reuse.

    bash bench/run.sh email_send [--items 2000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import orjson

from bench.common import ROOT, bridge_env, free_port, start_bridge, token


def send(url: str, count: int, keys: bool, run: int) -> dict[str, float]:
    items = [
        {
            "json": {
                "to": f"person{n}@example.org",
                "subject": f"Order {n} shipped",
                "text": f"Dear customer {n},\n\nyour order has shipped.\n" * 5,
                **({"idempotency_key": f"bench-{run}-{n}"} if keys else {}),
            }
        }
        for n in range(count)
    ]
    body = orjson.dumps(
        {
            "processing_type": "email_send",
            "items": items,
            "parameters": {"from": "shop@example.com"},
        }
    )
    request = urllib.request.Request(
        url + "/api/v1/workflow/execute",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token()}"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = orjson.loads(response.read())
        timing = response.headers["Server-Timing"]
    if answer["errors"]:
        sys.exit(f"errors: {answer['errors'][:3]}")
    return {name: float(value) for name, value in (p.split(";dur=") for p in timing.split(", "))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.smtp_sink", str(port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None and sink.stdin is not None
    assert sink.stdout.readline().strip() == "ready"

    def delivered() -> int:
        assert sink.stdin is not None and sink.stdout is not None
        sink.stdin.write("\n")
        sink.stdin.flush()
        return int(sink.stdout.readline())

    rows = []
    try:
        for run, (connections, keys) in enumerate([(1, True), (4, True), (4, False)]):
            with tempfile.TemporaryDirectory() as directory:
                env = bridge_env(
                    Path(directory),
                    BRIDGE_SMTP_HOST="127.0.0.1",
                    BRIDGE_SMTP_PORT=str(port),
                    BRIDGE_SMTP_TLS="none",
                    BRIDGE_SMTP_CONNECTIONS=str(connections),
                )
                bridge, url = start_bridge(env, Path(directory) / "bridge.log")
                try:
                    send(url, 50, keys, run + 100)  # warm-up: connections, imports
                    before = delivered()
                    phases = send(url, args.items, keys, run)
                    arrived = delivered() - before
                finally:
                    bridge.terminate()
                    bridge.wait(30)
            rate = args.items / (phases["run"] / 1000)
            rows.append((connections, keys, phases["run"], rate, arrived))
    finally:
        sink.stdin.close()
        sink.wait(30)
    print(f"\n{args.items:,} messages in one request\n")
    print("| SMTP connections | idempotency keys | run ms | messages/s | arrived at the sink |")
    print("|---|---|---|---|---|")
    for connections, keys, run_ms, rate, arrived in rows:
        print(
            f"| {connections} | {'yes' if keys else 'no'} | {run_ms:,.0f} | {rate:,.0f} | "
            f"{arrived:,} |"
        )


if __name__ == "__main__":
    main()
