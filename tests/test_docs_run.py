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
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

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
    printed: list[bytes] = field(default_factory=list)  # by the daemon's command
    url: str = ""
    last_request: tuple[str, str, bytes] | None = None

    async def __aenter__(self) -> Checkout:
        for entry in ROOT.iterdir():
            if entry.name not in ("data", ".git"):
                (self.folder / entry.name).symlink_to(entry)
        # run.sh installs the project unless .venv says it is installed: the tests' .venv has it
        # (with extras), and an install from here would point the venv at this folder.
        (ROOT / ".venv" / ".installed").touch(exist_ok=True)
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
                await self.daemon.wait()
        self.daemon = None

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
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.printed = []
        self.daemon = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=self.folder,
            env={**self.env, "BRIDGE_PORT": str(port), "BRIDGE_LOG_FORMAT": "console"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        reader = asyncio.create_task(self._read(self.daemon))
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
            capture_output=True,
            timeout=120,
            check=False,
        )
        parts = done.stdout.decode(errors="replace").split(EXIT)
        stderr = done.stderr.decode(errors="replace")[-2000:]
        faults = []
        for index, step in enumerate(steps):
            if index + 1 >= len(parts):
                faults.append(f"{block.where}: stopped before `{step.line}`: {stderr}")
                break
            output = parts[index] if index == 0 else parts[index].partition("\n")[2]
            status = int(parts[index + 1].partition("\n")[0])
            if status != 0:
                faults.append(f"{block.where}: `{step.line}` exited {status}: {stderr}")
            elif step.expected and (problem := _printed_differs(step.expected, output.strip())):
                faults.append(f"{block.where}: `{step.line}`: {problem}")
        return faults

    # ---- JSON blocks

    async def request(self, block: Block) -> list[str]:
        method, path = block.arg.split()
        self.last_request = (method, path, orjson.dumps(loose_json(block.text)))
        status, _ = await self.send(*self.last_request)
        if not 200 <= status < 300:
            return [f"{block.where}: {method} {path} answered {status}"]
        return []

    async def response(self, block: Block) -> list[str]:
        spec = RESPONSE.match(block.arg)
        assert spec is not None
        if spec["method"]:
            body = spec["body"].encode() or b""
            self.last_request = (spec["method"], spec["path"], body)
        if self.last_request is None:
            return [f"{block.where}: a response with no request before it"]
        status, answer = await self.send(*self.last_request)
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
