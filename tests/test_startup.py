"""`serve` when its start-up cannot finish (the address taken or not local, a host that does not
resolve, Redis silent): one line naming the setting, exit 2, promptly, with everything it took
released — the data directory's lock, Redis, the pools, the writers; a signal during start-up
ends it at once with 0. Real daemon processes throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis

from tests.daemon import ROOT, Daemon
from tests.test_cli import daemon_env, run_cli

pytestmark = pytest.mark.slow

# A failed start-up ends in about a second; the bound is for a loaded 2-core machine.
PROMPTLY_S = 30


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def assert_one_clean_line(stdout: str, stderr: str, line: str) -> None:
    """One line on stderr, starting with `line`; no traceback and no error in the log."""
    assert stderr.startswith(f"n8n-bridge: error: {line}") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stdout + stderr, stdout
    for raw in stdout.splitlines():
        record = orjson.loads(raw)
        assert record["level"] not in ("error", "critical"), record


def serve(env: dict[str, str]) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds taken); a hang fails the test (run_cli's timeout)."""
    started = time.monotonic()
    result = run_cli("serve", env=env)
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


async def assert_starts(env: dict[str, str]) -> None:
    async with (
        Daemon(env) as daemon,
        aiohttp.ClientSession() as session,
        session.get(daemon.url + "/health") as answer,
    ):
        assert answer.status == 200


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_an_address_in_use_stops_start_up_and_releases_what_it_took(
    tmp_path: Path, taken_port: int, backend: str, request: pytest.FixtureRequest
) -> None:
    """Embedded: the data directory's lock is let go. Redis: the backend had started (its
    consumer marked alive, its writers running); the failed start-up ends them as a stop does
    and leaves no mark of itself behind."""
    env = daemon_env(tmp_path, 5)
    if backend == "redis":
        redis_url = request.getfixturevalue("redis_url")
        env["BRIDGE_REDIS_URL"] = redis_url
    code, stdout, stderr, took = serve({**env, "BRIDGE_PORT": str(taken_port)})
    assert code == 2
    assert_one_clean_line(
        stdout,
        stderr,
        f"BRIDGE_HOST/BRIDGE_PORT: cannot listen on 127.0.0.1:{taken_port}: address already in use",
    )
    assert took < PROMPTLY_S
    if backend == "redis":
        with redis.Redis.from_url(redis_url) as client:
            assert client.keys("bridge:alive:*") == []  # its keeper stopped as on a SIGTERM
    await assert_starts(env)  # a corrected start works


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("nosuchhost.invalid", ""),  # the resolver's words follow
        ("192.0.2.1", "cannot assign requested address"),  # TEST-NET-1: no interface has it
    ],
)
async def test_a_host_it_cannot_listen_on_stops_start_up_naming_it(
    tmp_path: Path, host: str, reason: str
) -> None:
    env = daemon_env(tmp_path, 5)
    code, stdout, stderr, took = serve({**env, "BRIDGE_HOST": host, "BRIDGE_PORT": "0"})
    assert code == 2
    assert_one_clean_line(stdout, stderr, f"BRIDGE_HOST: cannot listen on {host}:0: {reason}")
    assert took < PROMPTLY_S
    await assert_starts(env)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_during_a_slow_start_up_ends_it_at_once(tmp_path: Path, signum: int) -> None:
    """A Redis that takes the connection and never answers holds start-up for its command
    timeout (5 s); a stop asked meanwhile is not made to wait for it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env = {**daemon_env(tmp_path, 5), "BRIDGE_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "serve",
            env=clean | env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            loop = asyncio.get_running_loop()
            connection, _ = await asyncio.wait_for(loop.sock_accept(silent), 60)
            with connection:
                # Past its command's write (a cancellation landing as Python 3.11's wait_for
                # completes is lost: start-up would then run on to Redis's timeout): the bridge
                # waits for Redis's answer.
                await asyncio.sleep(0.5)
                process.send_signal(signum)
                asked = time.monotonic()
                stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
                took = time.monotonic() - asked
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert took < 4  # well before Redis's 5 s timeout would have ended it with 2
    assert b"Traceback" not in stdout + stderr
    await assert_starts(daemon_env(tmp_path, 5))  # the data directory is free


@pytest.mark.parametrize("secret", [True, False], ids=["with-secret", "dev-mode"])
def test_a_data_dir_it_cannot_use_stops_start_up_naming_it(tmp_path: Path, secret: bool) -> None:
    """Dev mode writes its JWT secret there first; with a secret, the database is first."""
    (tmp_path / "a-file").write_text("")
    env = {**daemon_env(tmp_path, 5), "BRIDGE_DATA_DIR": str(tmp_path / "a-file" / "data")}
    if not secret:
        del env["BRIDGE_JWT_SECRET"]
    code, stdout, stderr, took = serve(env)
    assert code == 2
    assert_one_clean_line(stdout, stderr, "BRIDGE_DATA_DIR: cannot ")
    assert stderr.rstrip().endswith(": not a directory"), stderr
    assert took < PROMPTLY_S


# --- check-config --preflight: the same, found before a start ------------------------------


def preflight(env: dict[str, str]) -> tuple[int, str, str, float]:
    started = time.monotonic()
    result = run_cli("check-config", "--preflight", env=env)
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


async def test_preflight_finds_the_data_dir_held_by_a_running_bridge(tmp_path: Path) -> None:
    env = daemon_env(tmp_path, 5)
    assert preflight(env)[0] == 0
    async with Daemon(env) as running:
        assert running.process is not None
        code, stdout, stderr, _ = preflight(env)
        assert code == 2
        assert stdout == ""  # the settings are not printed: start-up would stop
        assert_one_clean_line(stdout, stderr, f"BRIDGE_DATA_DIR: {tmp_path} is in use by ")
        assert f"(pid {running.process.pid})" in stderr
        assert run_cli("check-config", env=env).returncode == 0  # the settings alone are good
        async with aiohttp.ClientSession() as session, session.get(running.url + "/health") as ok:
            assert ok.status == 200  # the lock tried and let go: the bridge is untouched
    code, stdout, stderr, _ = preflight(env)
    assert code == 0, stderr
    assert orjson.loads(stdout)["data_dir"] == str(tmp_path)


@pytest.mark.parametrize(
    "data_dir", ["a-file/data", "/proc/n8n-bridge-test/data"], ids=["under-a-file", "unwritable"]
)
def test_preflight_finds_a_data_dir_serve_could_not_use(tmp_path: Path, data_dir: str) -> None:
    """What `serve` would stop on (cannot make it, cannot write in it) is found before: /proc
    refuses even root."""
    (tmp_path / "a-file").write_text("")
    env = {**daemon_env(tmp_path, 5), "BRIDGE_DATA_DIR": str(tmp_path / data_dir)}
    code, stdout, stderr, _ = preflight(env)
    assert code == 2
    assert_one_clean_line(stdout, stderr, "BRIDGE_DATA_DIR: cannot use ")
    assert serve(env)[0] == 2  # as serve itself says


def test_preflight_makes_nothing(tmp_path: Path) -> None:
    env = {**daemon_env(tmp_path, 5), "BRIDGE_DATA_DIR": str(tmp_path / "data")}
    assert preflight(env)[0] == 0
    assert not (tmp_path / "data").exists()


def test_preflight_finds_the_address_taken(tmp_path: Path, taken_port: int) -> None:
    code, stdout, stderr, _ = preflight({**daemon_env(tmp_path, 5), "BRIDGE_PORT": str(taken_port)})
    assert code == 2
    assert_one_clean_line(
        stdout,
        stderr,
        f"BRIDGE_HOST/BRIDGE_PORT: cannot listen on 127.0.0.1:{taken_port}: address already in use",
    )


def test_preflight_finds_a_host_it_cannot_listen_on(tmp_path: Path) -> None:
    code, stdout, stderr, _ = preflight({**daemon_env(tmp_path, 5), "BRIDGE_HOST": "192.0.2.1"})
    assert code == 2
    assert_one_clean_line(
        stdout, stderr, "BRIDGE_HOST: cannot listen on 192.0.2.1:8080: cannot assign requested"
    )


def test_preflight_finds_redis_unreachable_or_silent(tmp_path: Path, redis_url: str) -> None:
    env = {**daemon_env(tmp_path, 5), "BRIDGE_REDIS_URL": redis_url}
    assert preflight(env)[0] == 0
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        for url in (
            "redis://127.0.0.1:1/0",  # nothing listens
            f"redis://127.0.0.1:{silent.getsockname()[1]}/0",  # takes the call, never answers
        ):
            code, stdout, stderr, took = preflight({**env, "BRIDGE_REDIS_URL": url})
            assert code == 2
            assert_one_clean_line(
                stdout, stderr, f"BRIDGE_REDIS_URL: Redis at {url} cannot serve: "
            )
            assert took < PROMPTLY_S


def test_a_port_it_may_not_take_stops_start_up_naming_it() -> None:
    """Below the first unprivileged port, as a user without the right (root runs it as nobody,
    in a data directory of its own: pytest's are root's only)."""
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 1:
        pytest.skip("every port is unprivileged here")
    command = [sys.executable, "-m", "bridge", "serve"]
    with tempfile.TemporaryDirectory() as data_dir:
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
            os.chown(data_dir, 65534, 65534)
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
        env |= daemon_env(Path(data_dir), 5) | {"BRIDGE_PORT": "1"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert_one_clean_line(
        result.stdout,
        result.stderr,
        "BRIDGE_HOST/BRIDGE_PORT: cannot listen on 127.0.0.1:1: permission denied",
    )
