"""Documentation that runs: every shell block and JSON example of README.md, docs/*.md and
n8n-nodes/README.md that a user is told to run or send is run here, against a live daemon, and
what it answers is held against what the page says (the markers: tests/doc_blocks.py).

Each page runs in a checkout of its own: a temporary folder that links to the repository's
files, so a page's blocks run from "the repository root" as written, and what they write (the
daemon's `./data`, a processor module the page shows) stays out of the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import ClientFactory
from tests.doc_blocks import (
    KINDS,
    PAGES,
    ROOT,
    Block,
    all_blocks,
    blocks,
    commands,
    differences,
    loose_json,
)
from tests.smtp_server import free_port
from tests.test_events import read_events
from tests.webhook_target import Target, json_of

SHELL = {"bash", "sh"}
DOC_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8080")
TOKEN_PRINTED = re.compile(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", re.M)
PLACEHOLDER = re.compile(r"^\s*TOKEN=(?:\.\.\.|…)")
EXIT = "\x1edoc-exit:"
RESPONSE = re.compile(
    r"^(?P<status>\d{3})(?:\s+to\s+(?P<method>[A-Z]+)\s+(?P<path>\S+)\s*(?P<body>.*))?$"
)
REQUEST = re.compile(r"^(?P<method>[A-Z]+)\s+(?P<path>\S+)$")
RUNS = {"run", "serve", "file", "request", "response"}


def test_every_block_says_what_the_suite_does_with_it() -> None:
    faults = []
    for block in all_blocks():
        if block.kind not in KINDS:
            faults.append(f"{block.where}: no `<!-- doc: … -->` marker right before the fence")
        elif block.kind in ("run", "serve") and block.language not in SHELL:
            faults.append(f"{block.where}: `{block.kind}` is for shell blocks")
        elif block.kind in ("request", "response") and block.language != "json":
            faults.append(f"{block.where}: `{block.kind}` is for JSON blocks")
        elif block.kind == "illustrative" and not block.arg:
            faults.append(f"{block.where}: say why it is illustrative only")
        elif block.kind == "checked" and (problem := _unknown_test(block.arg)):
            faults.append(f"{block.where}: {problem}")
        elif block.kind == "run" and any(
            "curl" in c.line and not c.expected for c in commands(block.text)
        ):  # curl -s exits 0 on a 4xx: only the answer shown can fail
            faults.append(f"{block.where}: show what its curl prints (`# …` lines after it)")
        elif block.kind == "request" and not REQUEST.match(block.arg):
            faults.append(f"{block.where}: `request METHOD /path`, not {block.arg!r}")
        elif block.kind == "response" and not RESPONSE.match(block.arg):
            faults.append(f"{block.where}: `response STATUS [to METHOD /path BODY]`")
    assert not faults, "\n".join(faults)


def _unknown_test(reference: str) -> str | None:
    """Why `tests/file.py::name` names no test (None: it names one)."""
    path, _, name = reference.partition("::")
    file = ROOT / path
    if not name or not file.is_file():
        return f"checked by {reference!r}: no such test file"
    if not re.search(rf"^(?:async )?def {re.escape(name)}\(", file.read_text(), re.M):
        return f"checked by {reference!r}: {path} has no test {name}"
    return None


def test_documented_json_is_json_once_its_ellipses_are_read() -> None:
    faults = []
    for block in all_blocks():
        if block.language == "json" and block.kind in ("request", "response", "checked"):
            try:
                loose_json(block.text)
            except ValueError as exc:
                faults.append(f"{block.where}: {exc}")
    assert not faults, "\n".join(faults)


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.kind in RUNS for b in blocks(p))])
async def test_the_page_runs_as_written(page: str, tmp_path: Path) -> None:
    async with Checkout(tmp_path) as checkout:
        faults: list[str] = []
        for block in blocks(page):
            faults += await checkout.do(block)
    assert not faults, "\n".join(faults)


async def test_a_changed_answer_fails_the_page(tmp_path: Path) -> None:
    """The runner itself: README's echo example, with one documented value changed, is caught."""
    [example] = [b for b in blocks("README.md") if "hello" in b.text and b.kind == "run"]
    changed = Block(
        example.page,
        example.line,
        example.language,
        example.text.replace('"world"},"pairedItem"', '"earth"},"pairedItem"'),
        example.kind,
        example.arg,
    )
    async with Checkout(tmp_path) as checkout:
        faults = await checkout.do(changed)
    assert any("'earth' documented, 'world' seen" in fault for fault in faults), faults


# ---- a checkout of the repository, with a live daemon -------------------------------------------


@dataclass
class Checkout:
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    daemon: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    printed: list[bytes] = field(default_factory=list)  # by the daemon's command
    url: str = ""
    answered: tuple[int, Any] | None = None  # by the last request block

    async def __aenter__(self) -> Checkout:
        for entry in ROOT.iterdir():
            if entry.name not in ("data", ".git"):
                (self.folder / entry.name).symlink_to(entry)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.daemon is not None and self.daemon.returncode is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.daemon.wait(), 15)
            except TimeoutError:
                self.daemon.kill()
        if self.reader is not None:
            await self.reader  # the pipe read to its end, the process reaped
        self.daemon = self.reader = None

    async def do(self, block: Block) -> list[str]:
        if block.kind == "file":
            name = block.text.split("\n", 1)[0].lstrip("#/ ").strip()
            (self.folder / name).write_text(block.text + "\n")
            return []
        if block.kind == "serve":
            [command] = commands(block.text)
            return await self.serve(block, command.line)
        if block.kind not in ("run", "request", "response"):
            return []
        if self.daemon is None:
            faults = await self.serve(None, "scripts/run.sh")
            if faults:
                return faults
        if block.kind == "run":
            return await asyncio.to_thread(self.run_shell, block)
        if block.kind == "request":
            return await self.request(block)
        return await self.response(block)

    # ---- the daemon

    async def serve(self, block: Block | None, command: str) -> list[str]:
        """Start the daemon as `command` says (run.sh, as a user would), on a free port."""
        await self.stop()
        port = free_port()
        self.printed = []
        self.daemon = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=self.folder,
            env={**self.env, "BRIDGE_PORT": str(port), "BRIDGE_LOG_FORMAT": "console"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.reader = reader = asyncio.create_task(self._read(self.daemon))
        self.url = f"http://127.0.0.1:{port}"
        where = block.where if block else "(the page's daemon)"
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if self.daemon.returncode is not None:
                    await reader
                    output = b"".join(self.printed).decode(errors="replace")
                    return [f"{where}: `{command}` exited {self.daemon.returncode}:\n{output}"]
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/health") as answer:
                        if answer.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                return [f"{where}: `{command}` did not answer /health in 30 s"]
        printed = TOKEN_PRINTED.search(b"".join(self.printed).decode(errors="replace"))
        if printed is None:
            return [f"{where}: `{command}` printed no token"]
        self.env["TOKEN"] = printed[1]
        return []

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            self.printed.append(line)
        await process.wait()

    # ---- shell blocks

    def run_shell(self, block: Block) -> list[str]:
        steps = [c for c in commands(block.text) if not PLACEHOLDER.match(c.line)]
        script = "\n".join(
            f"{DOC_ADDRESS.sub(self.url.removeprefix('http://'), step.line)}\n"
            f"printf '\\n{EXIT}%d\\n' $?"
            for step in steps
        )
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # what a user sees: an error is printed output too
            timeout=120,
            check=False,
        )
        parts = done.stdout.decode(errors="replace").split(EXIT)
        faults = []
        for index, step in enumerate(steps):
            if index + 1 >= len(parts):
                faults.append(f"{block.where}: stopped before `{step.line}`: {parts[-1]}")
                break
            output = parts[index] if index == 0 else parts[index].partition("\n")[2]
            status = int(parts[index + 1].partition("\n")[0])
            if status != 0:
                faults.append(f"{block.where}: `{step.line}` exited {status}: {output[-2000:]}")
            elif step.expected and (problem := _printed_differs(step.expected, output.strip())):
                faults.append(f"{block.where}: `{step.line}`: {problem}")
        return faults

    # ---- JSON blocks

    async def request(self, block: Block) -> list[str]:
        method, path = block.arg.split()
        self.answered = await self.send(method, path, orjson.dumps(loose_json(block.text)))
        if not 200 <= self.answered[0] < 300:
            return [f"{block.where}: {method} {path} answered {self.answered[0]}"]
        return []

    async def response(self, block: Block) -> list[str]:
        """The answer to the request of the marker, or else the last request block's."""
        spec = RESPONSE.match(block.arg)
        assert spec is not None
        if spec["method"]:
            self.answered = await self.send(spec["method"], spec["path"], spec["body"].encode())
        if self.answered is None:
            return [f"{block.where}: a response with no request before it"]
        status, answer = self.answered
        faults = []
        if status != int(spec["status"]):
            faults.append(f"{block.where}: {spec['status']} documented, {status} seen: {answer!r}")
        faults += [f"{block.where}: {d}" for d in differences(loose_json(block.text), answer)]
        return faults

    async def send(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.env['TOKEN']}"}
        if body:
            headers["Content-Type"] = "application/json"
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, data=body or None, headers=headers) as answer,
        ):
            raw = await answer.read()
            return answer.status, orjson.loads(raw) if raw else None


def _printed_differs(expected: str, printed: str) -> str | None:
    """Why `printed` is not what the page shows (None: it is)."""
    try:
        documented = loose_json(expected)
    except ValueError:
        documented = None
    if documented is not None:
        try:
            seen = orjson.loads(printed)
        except orjson.JSONDecodeError:
            return f"JSON documented, printed {printed[:300]!r}"
        found = differences(documented, seen)
        return "; ".join(found) if found else None
    for line in expected.split("\n"):
        pattern = ".*".join(re.escape(part) for part in line.strip().split("…"))
        if not re.search(pattern, printed):
            return f"printed no line like {line.strip()!r}; printed:\n{printed[:1000]}"
    return None


# ---- what the bridge sends, as the pages show it ------------------------------------------------

CHECKED_HERE = (
    "tests/test_docs_run.py::test_the_documented_callback_and_event_are_what_the_bridge_sends"
)


async def test_the_documented_callback_and_event_are_what_the_bridge_sends(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    callback, event = [b for b in blocks("docs/background-jobs.md") if b.arg == CHECKED_HERE]
    client = await make_client()
    body = {
        "processing_type": "echo",
        "mode": "async",
        "items": [{"json": {"name": "Ada"}}],
        "workflow_id": "wf-42",
        "execution_id": "1077",
        "callback_url": target.url(),
    }
    stream_url = "/api/v1/events?workflow_id=wf-42&type=workflow.completed&last_event_id=0"
    async with client.get(stream_url, headers=auth) as stream:
        assert (await client.post("/api/v1/workflow/execute", json=body, headers=auth)).ok
        [sent] = await read_events(stream, 1)
    [call] = await target.wait_for(1)
    assert differences(loose_json(callback.text), json_of(call)) == []
    assert differences(loose_json(event.text), {**sent["data"], "id": 1042}) == []  # ids vary


async def test_the_configuration_examples_are_read_as_documented(tmp_path: Path) -> None:
    """docs/configuration.md's key list and config file, their placeholders filled with real keys."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from bridge.settings import load_settings

    checked = "tests/test_docs_run.py::test_the_configuration_examples_are_read_as_documented"
    keys, config = [b for b in blocks("docs/configuration.md") if b.arg == checked]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    rsa_file = tmp_path / "partner.pem"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_file.write_bytes(rsa_key.public_bytes(pem, public))
    edge = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(pem, public).decode()
    [assignment] = shlex.split(keys.text)
    name, _, value = assignment.partition("=")
    value = (
        value.replace("…32 bytes or more…", "k" * 32)
        .replace("/etc/bridge/partner.pem", str(rsa_file))
        .replace('"-----BEGIN PUBLIC KEY-----\\n…"', orjson.dumps(edge).decode())
    )
    settings = load_settings(None, {name: value})
    assert [(k.kid, k.alg) for k in settings.jwt_keys] == [
        ("2026-11", "HS256"),
        ("partner", "RS256"),
        ("edge", "EdDSA"),
    ]
    file = tmp_path / "bridge.toml"
    file.write_text(config.text.replace('secret = "…"', f'secret = "{"s" * 32}"'))
    settings = load_settings(file, {})
    assert (settings.env, settings.port, settings.processors) == (
        "production",
        8080,
        ("my_company.processors",),
    )
