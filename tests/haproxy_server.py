"""A real HAProxy (Debian's 2.6; scripts/test.sh installs it) running the shipped
haproxy/haproxy.cfg, moved onto loopback: only the addresses change — the frontend, the stats
page, the colours' servers, the admin socket and the server-state file. Checks, retries and
timeouts stay those of the file operators deploy."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.daemon import ROOT
from tests.smtp_server import free_port

CONFIG = ROOT / "haproxy" / "haproxy.cfg"


def loopback_config(run_dir: Path, port: int, stats_port: int, blue: str, green: str) -> str:
    """The shipped config with loopback addresses; `blue` and `green` are host:port."""
    text = CONFIG.read_text()
    start = text.index("resolvers docker")
    text = text[:start] + text[text.index("\n\n", start) + 2 :]  # no Docker DNS here
    for old, new in [
        (" resolvers docker init-addr last,libc,none", ""),
        ("/var/run/haproxy", str(run_dir)),
        ("bind :8000", f"bind 127.0.0.1:{port}"),
        ("bind :8404", f"bind 127.0.0.1:{stats_port}"),
        ("bridge-blue:8080", blue),
        ("bridge-green:8080", green),
    ]:
        if old not in text:
            raise AssertionError(f"haproxy.cfg no longer has {old!r}: update the test's rewrite")
        text = text.replace(old, new)
    return text


class HAProxy:
    def __init__(self, run_dir: Path, blue: str, green: str) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed: run scripts/test.sh, which installs it")
        self.binary = binary
        self.run_dir = run_dir
        self.port = free_port()
        self.config = run_dir / "haproxy.cfg"
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(loopback_config(run_dir, self.port, free_port(), blue, green))
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        return self.run_dir / "admin.sock"

    async def start(self) -> HAProxy:
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "-db",  # in the foreground
            "-f",
            str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(200):
            if self.socket.exists():
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    pass
                else:
                    writer.close()
                    await writer.wait_closed()
                    return self
            await asyncio.sleep(0.05)
        raise RuntimeError("haproxy did not start")

    async def command(self, line: str) -> str:
        """One admin-socket command, as the switch script sends it."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        writer.write(line.encode() + b"\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer.decode()

    async def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: status, check_status, scur, stot…"""
        lines = (await self.command("show stat bridge 4 -1")).strip().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
        return {row["svname"]: row for row in rows}

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
