"""A real n8n for tests — 1.123 on the machine's Node 20, or 2.x on Node 24 — its CLI (import,
execute, activate) and its server (webhooks, waiting).

The runtimes are installed by scripts/test.sh (scripts/lib/n8n.sh) into cached folders outside
the repository; N8N_RUNTIME_DIR, N8N2_RUNTIME_DIR and NODE24_DIR point at them. Each N8n has its
own user folder (database, settings) and loads this repository's nodes through
N8N_CUSTOM_EXTENSIONS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.smtp_server import free_port

ROOT = Path(__file__).resolve().parents[2]
NODES_DIST = ROOT / "n8n-nodes" / "dist"
CACHE = Path.home() / ".cache" / "n8n-bridge"


@dataclass(frozen=True)
class Runtime:
    """One installed n8n version, and the Node it runs on (None: the machine's)."""

    version: str
    folder: Path
    node_bin: Path | None = None

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def n8n(self) -> Path:
        return self.folder / "node_modules" / ".bin" / "n8n"


RUNTIMES = (
    Runtime("1.123.81", Path(os.environ.get("N8N_RUNTIME_DIR", CACHE / "n8n-1.123.81"))),
    Runtime(
        "2.41.1",
        Path(os.environ.get("N8N2_RUNTIME_DIR", CACHE / "n8n-2.41.1")),
        Path(os.environ.get("NODE24_DIR", CACHE / "node-24.22.3" / "package")) / "bin",
    ),
)


def missing(runtime: Runtime) -> str | None:
    """Why the end-to-end tests cannot run here, if they cannot."""
    if not runtime.n8n.exists():
        return f"n8n is not installed in {runtime.folder}: run scripts/test.sh (it installs it)"
    if runtime.node_bin is not None and not (runtime.node_bin / "node").exists():
        return f"Node is not installed in {runtime.node_bin}: run scripts/test.sh"
    if not (NODES_DIST / "nodes" / "PythonBridge" / "PythonBridge.node.js").exists():
        return "the nodes are not built: run scripts/test.sh (npm run build in n8n-nodes/)"
    return None


# The states of an execution that has stopped: finished, failed, or waiting for a resume call.
STOPPED = ("success", "error", "crashed", "canceled", "waiting")


class N8n:
    def __init__(
        self, runtime: Runtime, home: Path, port: int, environment: Mapping[str, str] | None = None
    ) -> None:
        """`environment`: variables of its own, for what its workflows need (a Code node's)."""
        self.runtime = runtime
        self.environment = dict(environment or {})
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server: asyncio.subprocess.Process | None = None
        self.log = home / "n8n.log"

    @property
    def env(self) -> dict[str, str]:
        common = {
            **os.environ,
            "N8N_USER_FOLDER": str(self.home),
            "N8N_CUSTOM_EXTENSIONS": str(NODES_DIST),
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_PERSONALIZATION_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_TEMPLATES_ENABLED": "false",
            "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false",
            "N8N_PORT": str(self.port),
            "N8N_LISTEN_ADDRESS": "127.0.0.1",
            "DB_SQLITE_POOL_SIZE": "2",
            **self.environment,
        }
        if self.runtime.major == 1:
            # isolated-vm does not build on Node 20 here: the legacy expression engine, no runners
            return {
                **common,
                "N8N_EXPRESSION_ENGINE": "legacy",
                "N8N_RUNNERS_ENABLED": "false",
                "WEBHOOK_URL": f"{self.url}/",
            }
        assert self.runtime.node_bin is not None
        return {
            **common,
            "PATH": f"{self.runtime.node_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "N8N_WEBHOOK_URL": f"{self.url}/",
            "N8N_RUNNERS_BROKER_PORT": str(free_port()),  # the task runners' broker
        }

    def cli(self, *args: str, timeout: float = 180) -> str:
        env = self.env
        if self.runtime.major >= 2:  # a CLI run starts its own runners beside the server's
            env["N8N_RUNNERS_BROKER_PORT"] = str(free_port())
        done = subprocess.run(
            [str(self.runtime.n8n), *args],
            env=env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"n8n {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def import_json(self, kind: str, documents: list[dict[str, Any]]) -> None:
        """Import credentials or workflows (kind) from JSON documents, in one n8n start-up."""
        path = self.home / f"import-{kind}.json"
        path.write_bytes(orjson.dumps(documents))
        self.cli(f"import:{kind}", f"--input={path}")

    def execute(self, workflow_id: str) -> dict[str, Any]:
        """`n8n execute --id … --rawOutput`: the run's data, as n8n prints it."""
        out = self.cli("execute", f"--id={workflow_id}", "--rawOutput")
        if "{" not in out:
            raise RuntimeError(f"n8n execute printed no JSON:\n{out[-3000:]}")  # pragma: no cover
        start = out.index("{")
        return orjson.loads(out[start:])  # type: ignore[no-any-return]

    def activate(self, workflow_ids: list[str]) -> None:
        """What `n8n update:workflow --id … --active=true` (1.x) and `n8n publish:workflow --id …`
        (2.x) do — one update of the workflow's row, its current version made the active one —
        for many workflows in one go (a CLI run costs seconds). Takes effect at the next start."""
        with contextlib.closing(sqlite3.connect(self.database)) as db, db:
            db.executemany(
                "UPDATE workflow_entity SET active = 1, activeVersionId = versionId WHERE id = ?",
                [(w,) for w in workflow_ids],
            )
            active = {row[0] for row in db.execute("SELECT id FROM workflow_entity WHERE active")}
        if set(workflow_ids) - active:
            raise RuntimeError(f"no workflows {set(workflow_ids) - active} to activate")

    async def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.server = await asyncio.create_subprocess_exec(
                str(self.runtime.n8n), "start", env=self.env, cwd=self.home, stdout=log, stderr=log
            )
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while asyncio.get_running_loop().time() < deadline:
                if self.server.returncode is not None:
                    break
                # Webhooks are mounted last, after readiness: wait for n8n to say it is done.
                if "Editor is now accessible" in self.log.read_text(errors="replace"):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"{self.url}/healthz/readiness") as response:
                            if response.status == 200:
                                return
                await asyncio.sleep(0.5)
        await self.stop()
        raise RuntimeError(f"n8n did not start:\n{self.log.read_text()[-3000:]}")

    async def until_published(self, timeout: float = 120) -> None:
        """2.x: wait until the server has activated every published workflow (their webhooks
        and triggers). It does that after it says it is ready, from an outbox in its database
        that it fills at start-up; 1.x activates them before."""
        if self.runtime.major == 1:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with contextlib.closing(sqlite3.connect(self.home / ".n8n" / "database.sqlite")) as db:
                published = {
                    row[0]
                    for row in db.execute(
                        "SELECT id FROM workflow_entity WHERE activeVersionId IS NOT NULL"
                    )
                }
                done = dict(
                    db.execute(
                        "SELECT workflowId, status FROM workflow_publication_outbox ORDER BY id"
                    ).fetchall()
                )
            failed = {
                w: status
                for w, status in done.items()
                if status not in ("pending", "completed", "in_progress")
            }
            if failed:
                raise RuntimeError(
                    f"n8n could not activate {failed}:\n{self.log.read_text()[-3000:]}"
                )
            if all(done.get(w) == "completed" for w in published):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"n8n did not activate {published}: {done}")
            await asyncio.sleep(0.25)

    @property
    def database(self) -> Path:
        return self.home / ".n8n" / "database.sqlite"

    def webhook_workflow(self, path: str) -> str:
        """The id of the active workflow that webhook `path` starts."""
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            row = db.execute(
                "SELECT workflowId FROM webhook_entity WHERE webhookPath = ?", (path,)
            ).fetchone()
        if row is None:
            raise RuntimeError(f"no active workflow has the webhook {path!r}")
        return str(row[0])

    def newest_execution_id(self) -> int:
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            (newest,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM execution_entity").fetchone()
        return int(newest)

    async def execution(
        self,
        after: int,
        workflow_id: str | None = None,
        timeout: float = 60,
        states: tuple[str, ...] = STOPPED,
    ) -> Execution:
        """The first execution newer than `after` (of `workflow_id`, if given), once it is in one
        of `states` (by default: finished, failed, or waiting for a resume call)."""
        deadline = asyncio.get_running_loop().time() + timeout
        query = "SELECT e.id, e.status, e.workflowId, d.data FROM execution_entity e"
        query += " JOIN execution_data d ON d.executionId = e.id WHERE e.id > ?"
        query += f" AND e.status IN ({', '.join('?' * len(states))}) ORDER BY e.id"
        while True:
            with contextlib.closing(sqlite3.connect(self.database)) as db:
                rows = db.execute(query, (after, *states)).fetchall()
            for execution_id, status, workflow, data in rows:
                if workflow_id is None or workflow == workflow_id:
                    return Execution(int(execution_id), status, unflatten(orjson.loads(data)))
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"no execution after {after} stopped within {timeout} s")
            await asyncio.sleep(0.2)

    def execution_ids(self, after: int, workflow_id: str) -> list[int]:
        """The executions of `workflow_id` newer than `after`, whatever their status."""
        query = "SELECT id FROM execution_entity WHERE id > ? AND workflowId = ? ORDER BY id"
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            return [int(row[0]) for row in db.execute(query, (after, workflow_id))]

    def read(self, execution_id: int) -> Execution:
        """One execution as stored now, whatever its status."""
        query = "SELECT e.status, d.data FROM execution_entity e"
        query += " JOIN execution_data d ON d.executionId = e.id WHERE e.id = ?"
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            status, data = db.execute(query, (execution_id,)).fetchone()
        return Execution(execution_id, status, unflatten(orjson.loads(data)))

    async def running(self, after: int, workflow_id: str, timeout: float = 60) -> int:
        """The id of the first execution of `workflow_id` newer than `after`, once it runs."""
        query = "SELECT id FROM execution_entity WHERE id > ? AND workflowId = ?"
        query += " AND status = 'running' ORDER BY id LIMIT 1"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with contextlib.closing(sqlite3.connect(self.database)) as db:
                row = db.execute(query, (after, workflow_id)).fetchone()
            if row is not None:
                return int(row[0])
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"no execution of {workflow_id} after {after} ran")
            await asyncio.sleep(0.1)

    async def settled(self, execution_id: int, timeout: float = 120) -> Execution:
        """The execution once it has ended: not running, and not waiting to be resumed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (execution := self.read(execution_id)).status in ("new", "running", "waiting"):
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"execution {execution_id} is still {execution.status}")
            await asyncio.sleep(0.2)
        return execution

    def resume_url(self, execution: Execution) -> str:
        """What `$execution.resumeUrl` is for this execution: 2.x adds its resume token."""
        url = f"{self.url}/webhook-waiting/{execution.id}"
        token = execution.data.get("resumeToken")
        return f"{url}?signature={token}" if token else url

    async def stop(self) -> None:
        if self.server is not None and self.server.returncode is None:
            self.server.terminate()
            try:
                await asyncio.wait_for(self.server.wait(), 30)
            except TimeoutError:
                self.server.kill()
                await self.server.wait()


@dataclass(frozen=True)
class Execution:
    """One execution as n8n stored it: its status, and per node what each run put out."""

    id: int
    status: str
    data: dict[str, Any]

    @property
    def run_data(self) -> dict[str, Any]:
        return self.data["resultData"]["runData"]  # type: ignore[no-any-return]

    @property
    def error(self) -> dict[str, Any] | None:
        return self.data["resultData"].get("error")  # type: ignore[no-any-return]

    def task(self, node: str, run: int = 0) -> dict[str, Any]:
        return self.run_data[node][run]  # type: ignore[no-any-return]

    def output(self, node: str, output: int = 0, run: int = 0) -> list[dict[str, Any]]:
        """The items `node` put out on `output` (0: its main output; 1: its error output)."""
        outputs = self.task(node, run)["data"]["main"]
        return (outputs[output] or []) if output < len(outputs) else []

    def json(self, node: str, output: int = 0, run: int = 0) -> list[dict[str, Any]]:
        return [item["json"] for item in self.output(node, output, run)]

    def paired(self, node: str, output: int = 0) -> list[int]:
        """The input index each item of `output` is paired with."""
        return [item["pairedItem"]["item"] for item in self.output(node, output)]


def unflatten(flat: list[Any]) -> Any:
    """n8n's stored execution data (the `flatted` format): every string and object inside an entry
    is the index of the entry that holds it; entry 0 is the root."""
    built: dict[int, Any] = {}

    def entry(index: int) -> Any:
        if index in built:
            return built[index]
        value = flat[index]
        if isinstance(value, list):
            out: list[Any] = []
            built[index] = out
            out.extend(revive(v) for v in value)
            return out
        if isinstance(value, dict):
            node: dict[str, Any] = {}
            built[index] = node
            node.update((k, revive(v)) for k, v in value.items())
            return node
        return value

    def revive(value: Any) -> Any:
        return entry(int(value)) if isinstance(value, str) else value

    return entry(0)
