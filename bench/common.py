"""What the benchmarks share: ports, memory readings, starting the bridge."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-bench-secret-bench-secret-0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def token(scope: str = "execute", jti: str = "bench", workflows: list[str] | None = None) -> str:
    """A JWT the benchmark bridges accept, valid for an hour (limited to `workflows`, if given)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "n8n-bridge",
        "aud": "n8n-bridge",
        "iat": now,
        "exp": now + 3600,
        "scope": scope,
        "jti": jti,
        **({"workflows": workflows} if workflows is not None else {}),
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bridge_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for a bridge process: none of the caller's BRIDGE_* variables."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
        "BRIDGE_JWT_SECRET": SECRET,
        "BRIDGE_DATA_DIR": str(data_dir),
        **settings,
    }


def start_bridge(env: dict[str, str], log_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`n8n-bridge serve` on a free port, once /health answers."""
    port = free_port()
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve"],
            env={**env, "BRIDGE_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the bridge did not start; see {log_file}")
