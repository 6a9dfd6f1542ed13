"""The command line and the daemon as a real process: start-up, tokens, graceful shutdown."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest

from bridge.cli import main, parse_duration
from tests.conftest import PLUGINS, SECRET
from tests.daemon import ROOT, Daemon
from tests.redis_server import RedisServer
from tests.smtp_server import free_port

pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def daemon_env(tmp_path: Path, shutdown_timeout_s: float) -> dict[str, str]:
    return {
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_JWT_SECRET": SECRET,
        "BRIDGE_PROCESSORS": PLUGINS,
        "BRIDGE_SHUTDOWN_TIMEOUT_S": str(shutdown_timeout_s),
    }


def cli_token(tmp_path: Path) -> str:
    env = {"BRIDGE_JWT_SECRET": SECRET, "BRIDGE_DATA_DIR": str(tmp_path)}
    return run_cli("token", env=env).stdout.strip()


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "15m", "1h", "7d", "2.5s")] == [
        90,
        900,
        3600,
        604800,
        2.5,
    ]


def test_token_command_mints_a_verifiable_jwt(tmp_path: Path) -> None:
    result = run_cli(
        "token",
        "--scope",
        "execute,admin",
        "--ttl",
        "2h",
        env={"BRIDGE_JWT_SECRET": SECRET, "BRIDGE_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="n8n-bridge")
    assert claims["scope"] == "execute admin"
    assert claims["exp"] - claims["iat"] == 7200


def test_token_command_refuses_unknown_scopes(tmp_path: Path) -> None:
    result = run_cli(
        "token",
        "--scope",
        "root",
        env={"BRIDGE_JWT_SECRET": SECRET, "BRIDGE_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "unknown scope(s) root" in result.stderr


def test_a_bad_value_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli("serve", env={"BRIDGE_PORT": "eighty", "BRIDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("n8n-bridge: error: BRIDGE_PORT: ")


def test_a_bad_processor_module_stops_start_up(tmp_path: Path) -> None:
    result = run_cli(
        "serve", env={"BRIDGE_PROCESSORS": "no_such_module_x", "BRIDGE_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 2
    assert "cannot import module 'no_such_module_x'" in result.stderr


def test_production_refuses_to_start_without_auth(tmp_path: Path) -> None:
    result = run_cli("serve", env={"BRIDGE_ENV": "production", "BRIDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "BRIDGE_ENV=production needs authentication" in result.stderr
    assert not (tmp_path / "jwt_secret").exists()


def test_dev_mode_generates_a_secret_once(tmp_path: Path) -> None:
    env = {"BRIDGE_DATA_DIR": str(tmp_path)}
    first = run_cli("token", env=env)
    secret_file = tmp_path / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text()
    second = run_cli("token", env=env)
    assert secret_file.read_text() == secret
    for result in (first, second):
        jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"], audience="n8n-bridge")


def test_check_config_prints_settings_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('port = 9000\nlog_format = "console"\n')
    result = run_cli(
        "check-config",
        "--config",
        str(config),
        env={
            "BRIDGE_JWT_SECRET": SECRET,
            "BRIDGE_API_KEYS": "an-api-key-long-enough",
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["port"] == 9000  # from the file
    assert shown["log_format"] == "json"  # the environment wins over the file
    assert shown["jwt_secret"] == "**********"
    assert SECRET not in result.stdout and "an-api-key-long-enough" not in result.stdout
    assert "processors: echo" in result.stderr


def test_main_returns_2_on_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_MAX_BODY_BYTES", "-1")
    assert main(["check-config"]) == 2


async def test_sigterm_lets_in_flight_requests_finish_then_exits_0(tmp_path: Path) -> None:
    async with Daemon(daemon_env(tmp_path, shutdown_timeout_s=20)) as daemon:
        headers = {"Authorization": f"Bearer {cli_token(tmp_path)}"}
        body = {"processing_type": "sleep", "items": [{"json": {}}], "parameters": {"seconds": 1.5}}
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(
                session.post(f"{daemon.url}/api/v1/workflow/execute", json=body, headers=headers)
            )
            while not await _slow_request_in_flight(daemon):
                assert not slow.done()
                await asyncio.sleep(0.05)
            daemon.signal()
            response = await slow
            assert response.status == 200
            assert (await response.json())["items"][0]["json"] == {"slept": 1.5}
            assert await daemon.wait() == 0
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"{daemon.url}/health")
    messages = [r["msg"] for r in daemon.records()]
    assert "draining: signal received" in messages
    assert messages[-1] == "stopped"


async def _slow_request_in_flight(daemon: Daemon) -> bool:
    """True once the daemon's metrics show another request in flight besides this one."""
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("bridge_http_requests_in_flight "):
            return float(line.split()[1]) >= 2  # the slow request and this one
    return False


@pytest.mark.parametrize("processor", ["sleep", "sleep_sync"])
async def test_shutdown_is_bounded_when_a_request_outlives_it(
    tmp_path: Path, processor: str
) -> None:
    """An async processor is cancelled; a plain one blocking its thread is left behind."""
    async with Daemon(daemon_env(tmp_path, shutdown_timeout_s=0.5)) as daemon:
        token = cli_token(tmp_path)
        body = {
            "processing_type": processor,
            "items": [{"json": {}}],
            "parameters": {"seconds": 600},
        }
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(
                session.post(
                    f"{daemon.url}/api/v1/workflow/execute",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            while not await _slow_request_in_flight(daemon):
                await asyncio.sleep(0.05)
            daemon.signal()
            assert await daemon.wait(timeout=30) == 0
            with pytest.raises(aiohttp.ClientError):
                await slow


def test_token_command_limits_a_token_to_workflows(tmp_path: Path) -> None:
    env = {"BRIDGE_JWT_SECRET": SECRET, "BRIDGE_DATA_DIR": str(tmp_path)}
    result = run_cli("token", "--workflow", "wf-1", "--workflow", "team-a-*", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="n8n-bridge")
    assert claims["workflows"] == ["wf-1", "team-a-*"]
    refused = run_cli("token", "--workflow", "*", env=env)
    assert refused.returncode == 2
    assert "--workflow" in refused.stderr and "every workflow" in refused.stderr


# --- secrets never in config dumps, errors or start-up logs ---------------------------------

PASSWORD = "hunter2-PW-0123456789"
CALLBACK_KEY = "whsec_" + base64.b64encode(b"c" * 32).decode()
SECRET_SETTINGS = {
    "BRIDGE_REDIS_URL": f"redis://user:{PASSWORD}@127.0.0.1:6390/0",
    "BRIDGE_N8N_URL": f"https://n8n:{PASSWORD}@n8n.example/base",
    "BRIDGE_SMTP_HOST": "smtp.example",
    "BRIDGE_SMTP_USERNAME": "mailer",
    "BRIDGE_SMTP_PASSWORD": PASSWORD,
    "BRIDGE_JWT_SECRET": SECRET,
    "BRIDGE_JWT_KEYS": orjson.dumps(
        [{"kid": "k1", "alg": "HS256", "secret": PASSWORD * 2}]
    ).decode(),
    "BRIDGE_API_KEYS": PASSWORD,
    "BRIDGE_CALLBACK_SECRET": CALLBACK_KEY,
}


def test_check_config_masks_every_secret_and_url_credential(tmp_path: Path) -> None:
    result = run_cli("check-config", env={**SECRET_SETTINGS, "BRIDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in (PASSWORD, SECRET, CALLBACK_KEY, CALLBACK_KEY.removeprefix("whsec_")):
        assert secret not in output
    shown = orjson.loads(result.stdout)
    assert shown["redis_url"] == "redis://***@127.0.0.1:6390/0"
    assert shown["n8n_url"] == "https://***@n8n.example/base"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRIDGE_REDIS_URL", f"http://:{PASSWORD}@127.0.0.1/0"),  # wrong scheme
        ("BRIDGE_REDIS_URL", f"redis://:{PASSWORD}@[::1/0"),  # broken IPv6 literal
        ("BRIDGE_REDIS_URL", f"redis://:pa/{PASSWORD}@127.0.0.1:6379/0"),  # an unescaped '/'
        ("BRIDGE_REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:port/0"),
        ("BRIDGE_N8N_URL", f"ftp://u:{PASSWORD}@n8n.example/"),
        ("BRIDGE_N8N_URL", f"https://u:{PASSWORD}@[bad/"),
        ("BRIDGE_N8N_URL", f"https://n8n.example/base?token={PASSWORD}"),  # no query allowed
        ("BRIDGE_JWT_KEYS", f'[{{"kid": "k", "alg": "HS256", "secret": "{PASSWORD}"}}]'),
    ],
)
def test_config_errors_never_show_a_secret(tmp_path: Path, name: str, value: str) -> None:
    env = {"BRIDGE_DATA_DIR": str(tmp_path), "BRIDGE_JWT_SECRET": SECRET, name: value}
    for command in ("check-config", "serve"):
        result = run_cli(command, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.startswith(f"n8n-bridge: error: {name}: "), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert PASSWORD not in result.stdout + result.stderr


def test_a_redis_that_cannot_serve_stops_start_up_with_one_masked_line(
    tmp_path: Path, redis_url: str
) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    for url in (
        f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0",  # nothing listens
        f"redis://:{PASSWORD}@127.0.0.1:{port}/0",  # a password this Redis does not want
    ):
        env = {
            "BRIDGE_DATA_DIR": str(tmp_path),
            "BRIDGE_JWT_SECRET": SECRET,
            "BRIDGE_REDIS_URL": url,
        }
        result = run_cli("serve", env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        assert "n8n-bridge: error: BRIDGE_REDIS_URL: " in result.stderr
        assert "redis://***@127.0.0.1:" in result.stderr


async def test_start_up_logs_never_show_the_redis_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        server.client().config_set("requirepass", PASSWORD)
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        env = {**daemon_env(tmp_path, 5), "BRIDGE_REDIS_URL": url}
        async with Daemon(env) as daemon:
            pass
        assert any("redis://***@127.0.0.1" in line for line in daemon.lines)
        assert all(PASSWORD not in line for line in daemon.lines)
    finally:
        server.stop()


async def test_the_tooling_names_exported_stop_no_command(tmp_path: Path) -> None:
    """docs/operations.md exports BRIDGE_ADMIN_API_KEY for the switch script in the shell that
    also starts bridges; compose's BRIDGE_VERSION and BRIDGE_PUBLIC_PORT may be exported too."""
    tooling = {
        "BRIDGE_ADMIN_API_KEY": "admin-key-0123456789",
        "BRIDGE_ADMIN_TOKEN": "x.y.z",
        "BRIDGE_VERSION": "1.2.3",
        "BRIDGE_PUBLIC_PORT": "8000",
    }
    env = {**daemon_env(tmp_path, 5), **tooling}
    for command in ("check-config", "token"):
        result = run_cli(command, env=env)
        assert result.returncode == 0, result.stderr
    daemon = await Daemon(env).start()
    daemon.signal()
    assert await daemon.wait() == 0
    typo = run_cli("check-config", env={**env, "BRIDGE_ADMIN_TOKENS": "x"})
    assert typo.returncode == 2
    assert typo.stderr.startswith("n8n-bridge: error: BRIDGE_ADMIN_TOKENS: unknown setting")


async def test_token_exits_3_when_nothing_can_sign(tmp_path: Path) -> None:
    """API keys only: the settings are valid, but there is no secret to sign a token with."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "token",
        env={
            **clean,
            "PYTHONPATH": str(ROOT),
            "BRIDGE_API_KEYS": "k" * 20,
            "BRIDGE_DATA_DIR": str(tmp_path),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, stdout) == (3, b"")
    assert b"no HS256 secret to sign with" in stderr
    assert not (tmp_path / "jwt_secret").exists()


async def test_a_sigterm_right_after_the_listening_line_still_stops_cleanly(tmp_path: Path) -> None:
    """The signal handlers are in place before the daemon says it listens: a supervisor that
    stops it at once gets a drained exit 0, not a death by SIGTERM (-15)."""
    for round_ in range(3):
        daemon = await Daemon(daemon_env(tmp_path / str(round_), 5)).start()
        daemon.signal()
        assert await daemon.wait() == 0
