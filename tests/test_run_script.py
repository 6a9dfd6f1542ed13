"""scripts/run.sh as a user runs it: a real process started from the user's own folder, with the
README's processor example in it and the README's command, as written."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiohttp
import pytest

from tests.daemon import LISTENING, ROOT
from tests.smtp_server import free_port

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
SCRIPT = ROOT / "scripts" / "run.sh"
COMMAND = "BRIDGE_PROCESSORS=my_processors scripts/run.sh"
API_KEY = "run-sh-own-api-key-0123456789"
EXECUTE = "/api/v1/workflow/execute"
JWT = re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]+")
TOKEN_COMMAND = re.compile(r"(\S+/n8n-bridge) token --scope (\S+) --ttl (\S+)")


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def readme_processor() -> str:
    """The README's `my_processors.py`, as printed."""
    (block,) = re.findall(
        r"```python\n(# my_processors\.py\n.*?)```",
        readme_section("Write your own processor"),
        re.S,
    )
    return block


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A user's folder: the README's module, and `scripts/` as in a checkout (the script finds
    its checkout through the link, as through a path)."""
    (tmp_path / "my_processors.py").write_text(readme_processor())
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    return tmp_path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "PYTHON"))}
    return {**env, "BRIDGE_PORT": str(free_port()), **extra}


def banner(printed: str) -> str:
    """What run.sh printed before the daemon's first log line (a line of JSON)."""
    return re.split(r'^\{"', printed, maxsplit=1, flags=re.M)[0]


def to_try(printed: str) -> str:
    """The commands the banner says to try, as a user pastes them (the indented lines after
    its `try…:` line)."""
    after = re.split(r"^try\b.*:\n", banner(printed), maxsplit=1, flags=re.M)[1]
    return textwrap.dedent("".join(re.findall(r"^  .*\n", after, re.M)))


async def paste(commands: str, cwd: Path, **env: str) -> dict[str, object]:
    """Run pasted commands in bash; their output is the bridge's JSON answer."""
    code, stdout, stderr = await run_to_the_end(
        "bash", "-ec", commands, cwd=cwd, env=clean_env(**env)
    )
    assert code == 0, stderr
    answer: dict[str, object] = json.loads(stdout)
    return answer


def scopes(token: str) -> list[str]:
    claims = token.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return str(payload["scope"]).split()


ECHOED = [{"json": {"hi": 1}, "pairedItem": {"item": 0}}]


async def run_to_the_end(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@asynccontextmanager
async def started(command: str, cwd: Path, env: dict[str, str]) -> AsyncIterator[tuple[str, str]]:
    """run.sh until its bridge listens: (its URL, all it printed until then)."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(90):
            async for raw in process.stdout:
                lines.append(raw.decode())
                if match := LISTENING.search(lines[-1]):
                    break
            else:
                raise AssertionError("run.sh ended:\n" + "".join(lines))
        yield match[1], "".join(lines)
    finally:
        with suppress(ProcessLookupError):  # it may have ended by itself
            os.killpg(process.pid, signal.SIGTERM)
        drain = asyncio.ensure_future(process.stdout.read())
        assert await asyncio.wait_for(process.wait(), 60) == 0
        await drain


async def execute(url: str, headers: dict[str, str], body: dict[str, object]) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + EXECUTE, json=body, headers=headers) as response,
    ):
        answer: dict[str, object] = await response.json()
        assert response.status == 200, answer
        return answer


async def test_the_readme_gives_the_command_this_file_runs() -> None:
    section = readme_section("Write your own processor")
    assert f"```bash\n{COMMAND}\n```" in section


async def test_the_readme_processor_runs_with_the_command_as_written(workdir: Path) -> None:
    async with started(COMMAND, workdir, clean_env()) as (url, printed):
        (token,) = JWT.findall(printed)
        answer = await execute(
            url,
            {"Authorization": f"Bearer {token}"},
            {"processing_type": "greet", "items": [{"json": {"name": "Ada"}}]},
        )
    assert answer["items"] == [
        {"json": {"name": "Ada", "greeting": "Hello, Ada!"}, "pairedItem": {"item": 0}}
    ]
    assert (workdir / "data" / "jwt_secret").exists()  # ./data is the folder it was started in


async def test_the_dev_banner_s_commands_work_as_pasted(workdir: Path) -> None:
    """The banner's `try` commands, pasted with TOKEN set to the token it printed, reach the
    bridge; the command it gives for another token makes one like it (all scopes, 24 h)."""
    async with started("scripts/run.sh", workdir, clean_env()) as (_, printed):
        (token,) = JWT.findall(printed)
        assert f"\n{token}\n" in banner(printed)  # alone on its line, to copy
        answer = await paste(to_try(printed), workdir, TOKEN=token)
        (command,) = TOKEN_COMMAND.findall(banner(printed))
    assert answer["items"] == ECHOED
    _, scope, ttl = command
    assert (scope.split(","), ttl) == (scopes(token), "24h") and "all scopes" in printed
    assert scopes(token) == ["execute", "status", "admin"]


@pytest.mark.parametrize(
    "signer",
    [
        {"BRIDGE_JWT_SECRET": "p" * 40},
        {"BRIDGE_JWT_KEYS": '[{"kid": "2026-11", "alg": "HS256", "secret": "' + "k" * 40 + '"}]'},
    ],
    ids=["jwt-secret", "hs256-key"],
)
async def test_run_sh_in_production_mints_and_prints_no_token(
    workdir: Path, signer: dict[str, str]
) -> None:
    """run.sh is the development starter: with BRIDGE_ENV=production it starts the bridge but
    makes no token; it says how to make one (an HS256 key of BRIDGE_JWT_KEYS signs as the secret
    does), and that command, then the `try` commands with its token, work as pasted."""
    env = clean_env(BRIDGE_ENV="production", **signer)
    async with started("scripts/run.sh", workdir, env) as (_, printed):
        assert not JWT.search(printed)
        (command,) = TOKEN_COMMAND.findall(banner(printed))
        bridge, scope, ttl = command
        code, token, stderr = await run_to_the_end(
            bridge, "token", "--scope", scope, "--ttl", ttl, cwd=workdir, env=env
        )
        assert code == 0, stderr
        answer = await paste(to_try(printed), workdir, TOKEN=token.strip())
    assert answer["items"] == ECHOED
    assert "BRIDGE_ENV=production" in banner(printed)
    assert not (workdir / "data" / "jwt_secret").exists()


async def test_a_cpu_bound_processor_of_the_folder_runs_in_the_process_pool(
    workdir: Path,
) -> None:
    """The pool's processes import the module by name too: they find it where the daemon did."""
    (workdir / "heavy.py").write_text(
        "from bridge import processor\n\n\n"
        "@processor('square', cpu_bound=True)\n"
        "def square(item, params, ctx):\n"
        "    return {'square': item.json['n'] ** 2}\n"
    )
    env = clean_env(BRIDGE_PROCESSORS="heavy", BRIDGE_API_KEYS=API_KEY)
    async with started(str(SCRIPT), workdir, env) as (url, _):
        answer = await execute(
            url,
            {"X-API-Key": API_KEY},
            {"processing_type": "square", "items": [{"json": {"n": 7}}]},
        )
    assert answer["items"] == [{"json": {"square": 49}, "pairedItem": {"item": 0}}]


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("BRIDGE_PORT=eighty", "BRIDGE_PORT: Input should be a valid integer"),
        ("BRIDGE_PROCESSORS=no_such_module", "cannot import module 'no_such_module'"),
        ("BRIDGE_PORTT=1", "BRIDGE_PORTT: unknown setting"),
        # what would stop the start itself: found before the banner too
        ("BRIDGE_REDIS_URL=redis://127.0.0.1:1/0", "BRIDGE_REDIS_URL: Redis at redis://"),
        ("BRIDGE_HOST=192.0.2.1", "BRIDGE_HOST: cannot listen on 192.0.2.1:"),
    ],
)
async def test_a_bad_setting_stops_run_sh_with_its_one_line_before_any_banner(
    workdir: Path, setting: str, error: str
) -> None:
    code, stdout, stderr = await run_to_the_end(
        "bash", "-c", f"{setting} scripts/run.sh", cwd=workdir, env=clean_env()
    )
    assert code == 2
    assert stdout == ""  # no banner, no token
    assert stderr.count("\n") == 1 and stderr.startswith("n8n-bridge: error: ")
    assert error in stderr
    assert not (workdir / "data").exists()  # nothing made either


@pytest.mark.parametrize("mode", ["dev", "production"])
async def test_run_sh_starts_a_bridge_that_has_api_keys_only(workdir: Path, mode: str) -> None:
    """No JWT secret: no token to mint. It starts, says how to authenticate, and prints no
    secret (the key is the user's own); its `try` commands work with API_KEY set to that key,
    as the banner says."""
    config = workdir / "bridge.toml"
    port = free_port()
    config.write_text(f"port = {port}\n")
    env = clean_env(BRIDGE_API_KEYS=API_KEY, BRIDGE_ENV=mode)
    del env["BRIDGE_PORT"]
    async with started("scripts/run.sh --config bridge.toml", workdir, env) as (url, printed):
        assert url == f"http://127.0.0.1:{port}"
        answer = await paste(to_try(printed), workdir, API_KEY=API_KEY)
    assert answer["items"] == ECHOED
    shown = banner(printed)
    assert f"http://127.0.0.1:{port}" in shown  # the port of the config file
    assert "X-API-Key" in shown and "BRIDGE_API_KEYS" in shown
    assert re.search(r"^try, with API_KEY set to one of your API keys\b", shown, re.M)
    assert API_KEY not in printed and not JWT.search(printed)
    assert not (workdir / "data" / "jwt_secret").exists()


async def test_the_console_script_finds_the_folder_s_modules_after_the_installed_ones(
    workdir: Path,
) -> None:
    (workdir / "orjson.py").write_text("raise ImportError('a file of the folder was imported')\n")
    code, _, stderr = await run_to_the_end(
        str(Path(sys.executable).parent / "n8n-bridge"),
        "check-config",
        cwd=workdir,
        env=clean_env(BRIDGE_PROCESSORS="my_processors"),
    )
    assert code == 0, stderr
    assert "greet" in stderr.splitlines()[-1]  # processors: echo, ..., greet, ...


async def test_help_is_serve_s_help_with_no_banner(workdir: Path) -> None:
    code, stdout, stderr = await run_to_the_end(
        "bash", "-c", "scripts/run.sh --help", cwd=workdir, env=clean_env()
    )
    assert (code, stderr) == (0, "")
    assert stdout.startswith("usage: n8n-bridge serve") and "--config" in stdout


async def test_a_second_run_sh_in_the_folder_stops_before_its_banner(workdir: Path) -> None:
    """The first one holds ./data; the second says so in one line, and prints no token."""
    async with started(str(SCRIPT), workdir, clean_env()):
        code, stdout, stderr = await run_to_the_end(
            "bash", "-c", "scripts/run.sh", cwd=workdir, env=clean_env()
        )
    assert code == 2
    assert stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("n8n-bridge: error: BRIDGE_DATA_DIR: ")
    assert "is in use by another n8n-bridge (pid " in stderr


async def test_a_port_taken_stops_run_sh_before_its_banner(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stdout, stderr = await run_to_the_end(
            "bash", "-c", "scripts/run.sh", cwd=workdir, env=clean_env(BRIDGE_PORT=str(port))
        )
    assert code == 2
    assert stdout == ""
    assert stderr == (
        f"n8n-bridge: error: BRIDGE_HOST/BRIDGE_PORT: cannot listen on 127.0.0.1:{port}: "
        "address already in use\n"
    )
    assert not (workdir / "data").exists()


@pytest.mark.parametrize("console", ["on", "off"])
async def test_the_banner_names_the_console_when_it_is_served(workdir: Path, console: str) -> None:
    env = clean_env() if console == "on" else clean_env(BRIDGE_CONSOLE="false")
    async with started("scripts/run.sh", workdir, env) as (url, printed):
        said = f"console: {url}/admin/ui/  (sign in with an admin token"
        assert (said in banner(printed)) == (console == "on")
        async with aiohttp.ClientSession() as session:
            login = await session.get(f"{url}/admin/ui/login")
            assert login.status == (200 if console == "on" else 404)
