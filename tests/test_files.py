"""Files at rest, with a real start-up: the data directory is the owner's only (0700), and so
are the database files and the dev JWT secret (0600), whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import PLUGINS
from tests.daemon import Daemon

pytestmark = pytest.mark.slow


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The daemon inherits a umask that would let everyone read and write what it creates."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def start_and_write(data_dir: Path) -> Daemon:
    """A dev-mode daemon (it generates its JWT secret) that has written to its database."""
    env = {"BRIDGE_DATA_DIR": str(data_dir), "BRIDGE_PROCESSORS": PLUGINS}
    async with Daemon(env) as daemon, aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.url}/ready") as response:
            assert response.status == 200
        files = ["bridge.sqlite3", "bridge.sqlite3-wal", "bridge.sqlite3-shm", "jwt_secret"]
        for name in files:
            assert (data_dir / name).exists(), name
            assert mode(data_dir / name) == 0o600, name
    return daemon


async def test_a_new_data_dir_and_its_files_are_the_owners_only(
    tmp_path: Path, open_umask: None
) -> None:
    data_dir = tmp_path / "new" / "data"
    await start_and_write(data_dir)
    assert mode(data_dir) == 0o700


async def test_an_existing_loose_data_dir_is_warned_about_and_its_files_tightened(
    tmp_path: Path, open_umask: None
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    old_db = data_dir / "bridge.sqlite3"
    old_db.touch(mode=0o644)  # left by an older version: tightened
    old_secret = data_dir / "jwt_secret"
    old_secret.write_text("s" * 48)
    old_secret.chmod(0o644)
    daemon = await start_and_write(data_dir)
    assert mode(data_dir) == 0o755  # the operator's directory is left as it is, and named
    warnings = [r["msg"] for r in daemon.records() if r["level"] == "warning"]
    assert any(str(data_dir) in msg and "0755" in msg and "chmod 700" in msg for msg in warnings)
