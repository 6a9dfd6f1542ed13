"""Benchmark: the sync execute endpoint (1 item, `echo`, JWT) against a bare aiohttp handler.

Both servers run as one process each, one after the other, driven by the same generators:
- throughput: wrk, 50 connections, one thread, as fast as the server answers;
- latency: hey, 50 connections at a fixed rate below saturation (a latency figure at saturation
  only measures the queue: with 50 requests always waiting, mean latency = 50 / throughput);
and RSS read from /proc when idle (started, one request served) and after the load.

    bash bench/run.sh http_sync [--duration 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.common import ROOT, bridge_env, free_port, rss_mb, token

PATH = "/api/v1/workflow/execute"
BODY = orjson.dumps(
    {"processing_type": "echo", "items": [{"json": {"name": "Ada", "email": "ada@example.com"}}]}
)


@dataclass
class Figures:
    name: str
    rps: float = 0.0
    p50_ms_saturated: float = 0.0
    p99_ms_saturated: float = 0.0
    rate_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p50_ms_one: float = 0.0
    p99_ms_one: float = 0.0
    idle_rss_mb: float = 0.0
    loaded_rss_mb: float = 0.0
    non_2xx: int = 0


def wait_ready(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url + PATH, data=BODY, headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def wrk(
    url: str,
    headers: dict[str, str],
    duration: int,
    tokens: list[str] | None = None,
    connections: int = 50,
) -> tuple[float, float, float, int]:
    lines = ['wrk.method = "POST"', f"wrk.body = {orjson.dumps(BODY.decode()).decode()}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if tokens:  # a different token for each request, round robin
        lines += [
            "tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}",
            "i = 0",
            "request = function()",
            "  i = i % #tokens + 1",
            '  wrk.headers["Authorization"] = "Bearer " .. tokens[i]',
            "  return wrk.format()",
            "end",
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            script.name,
            url + PATH,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _wrk_ms(re.search(r"50%\s+([\d.]+\w+)", out)[1])  # type: ignore[index]
    p99 = _wrk_ms(re.search(r"99%\s+([\d.]+\w+)", out)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        print("  wrk:", errors[0], file=sys.stderr)
    return rps, p50, p99, int(bad[1]) if bad else 0


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def hey(url: str, headers: dict[str, str], duration: int, rate: int) -> tuple[float, float]:
    args = [
        "hey",
        "-z",
        f"{duration}s",
        "-c",
        "50",
        "-q",
        str(rate / 50),
        "-m",
        "POST",
        "-D",
        "/dev/stdin",
    ]
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run(
        [*args, url + PATH], input=BODY.decode(), capture_output=True, text=True, check=True
    ).stdout
    p50 = float(re.search(r"50% in ([\d.]+) secs", out)[1]) * 1000  # type: ignore[index]
    p99 = float(re.search(r"99% in ([\d.]+) secs", out)[1]) * 1000  # type: ignore[index]
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    if any(code != "200" for code, _ in codes):
        print("  hey status codes:", codes, file=sys.stderr)
    return p50, p99


def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    headers: dict[str, str],
    port: int,
    args: argparse.Namespace,
    log_file: Path,
    tokens: list[str] | None = None,
) -> Figures:
    url = f"http://127.0.0.1:{port}"
    with log_file.open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        json_headers = {"Content-Type": "application/json", **headers}
        wait_ready(url, json_headers)
        time.sleep(1)
        figures = Figures(name, idle_rss_mb=rss_mb(server.pid))
        wrk(url, json_headers, 3)  # warm-up
        figures.rps, figures.p50_ms_saturated, figures.p99_ms_saturated, figures.non_2xx = wrk(
            url, json_headers, args.duration, tokens
        )
        figures.rate_rps = args.rate
        _, figures.p50_ms_one, figures.p99_ms_one, _ = wrk(
            url, json_headers, max(3, args.duration // 2), tokens, connections=1
        )
        if tokens is None:
            figures.p50_ms, figures.p99_ms = hey(url, json_headers, args.duration, args.rate)
        figures.loaded_rss_mb = rss_mb(server.pid)
        return figures
    finally:
        server.terminate()
        server.wait(30)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--rate", type=int, default=1000, help="requests/s for the latency run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: bash bench/run.sh installs it (Debian package {tool})")
    out = Path(tempfile.mkdtemp(prefix="bench-http-"))
    python = sys.executable
    env = bridge_env(out / "data")
    tokens = [token(jti=str(n)) for n in range(5000)]  # more than the bridge's cache holds
    bearer = {"Authorization": f"Bearer {tokens[0]}"}
    bridge = [python, "-m", "bridge", "serve"]
    # name, command, extra environment, headers, a new token per request
    servers: list[tuple[str, list[str], dict[str, str] | None, dict[str, str], bool]] = [
        ("bare aiohttp handler", [python, "bench/bare_app.py"], None, {}, False),
        ("n8n-bridge, echo, JWT reused", bridge, {}, bearer, False),
        (
            "n8n-bridge, echo, JWT reused, access log off",
            bridge,
            {"BRIDGE_ACCESS_LOG": "false"},
            bearer,
            False,
        ),
        ("n8n-bridge, echo, new JWT per request", bridge, {}, bearer, True),
    ]
    results: dict[str, list[Figures]] = {}
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no}/{args.rounds}", file=sys.stderr)
        for name, command, extra, headers, fresh in servers:
            port = free_port()
            if extra is None:  # the bare app takes its port as an argument
                command, server_env = [*command, str(port)], dict(os.environ)
            else:
                server_env = {**env, **extra, "BRIDGE_PORT": str(port)}
            figures = measure(
                name,
                command,
                server_env,
                headers,
                port,
                args,
                out / f"server-{len(results.get(name, []))}-{port}.log",
                tokens if fresh else None,
            )
            results.setdefault(name, []).append(figures)
    report(results, args, out)


def report(results: dict[str, list[Figures]], args: argparse.Namespace, out: Path) -> None:
    print(
        f"\nmedians of {args.rounds} interleaved rounds; wrk -t1 -d{args.duration}s; "
        f"hey -c50 -z{args.duration}s at {args.rate} req/s; logs in {out}\n"
    )
    print(
        "| server | req/s (wrk, 50 conn.) | share of bare | p50 / p99 ms, 50 conn. | "
        f"p50 / p99 ms, 1 conn. | p50 / p99 ms at {args.rate} req/s (hey, 50 conn.) | "
        "idle RSS MB | RSS after load MB | non-2xx |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    bare_rounds = results["bare aiohttp handler"]

    def pair(rounds: list[Figures], a: str, b: str) -> str:
        first = median([getattr(r, a) for r in rounds])
        return f"{first:.2f} / {median([getattr(r, b) for r in rounds]):.2f}" if first else "—"

    for name, rounds in results.items():
        share = median([r.rps / b.rps for r, b in zip(rounds, bare_rounds, strict=True)])
        print(
            f"| {name} | {median([r.rps for r in rounds]):,.0f} | {share:.0%} | "
            f"{pair(rounds, 'p50_ms_saturated', 'p99_ms_saturated')} | "
            f"{pair(rounds, 'p50_ms_one', 'p99_ms_one')} | {pair(rounds, 'p50_ms', 'p99_ms')} | "
            f"{median([r.idle_rss_mb for r in rounds]):.1f} | "
            f"{median([r.loaded_rss_mb for r in rounds]):.1f} | "
            f"{sum(r.non_2xx for r in rounds)} |"
        )
    for name, rounds in results.items():
        shares = ", ".join(f"{r.rps / b.rps:.0%}" for r, b in zip(rounds, bare_rounds, strict=True))
        print(f"per round, {name} / bare: {shares}")


if __name__ == "__main__":
    main()
