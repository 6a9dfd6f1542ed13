"""Files at rest: the data directory is its owner's only (0700) and so is every file the bridge
keeps in it (0600: the SQLite database and its -wal and -shm files, the dev JWT secret),
whatever the umask.

A data directory that already exists with looser permissions is left as it is, with a warning:
it may be a volume's root or a directory shared on purpose, which the bridge has no business
changing; the files in it are 0600 all the same. Files of the bridge's own that are looser (left
by an older version) are tightened.

One process writes a data directory: `hold(path)` takes an OS lock (flock) on its `bridge.lock`
for as long as the process keeps the descriptor; a crash lets go of it with the process. A second
embedded instance on the same directory would otherwise re-run the first's running jobs and
collide with its writes. `check_free(path)` tries the lock and lets go of it at once, and
`check_usable(path)` makes and writes what a start would, removing it again: whether a start
would get the directory (`check-config --preflight`).
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = 0o077  # any permission for the group or for others
LOCK_FILE = "bridge.lock"


class InUse(Exception):
    """Another process holds the data directory; its message names the directory and the pid."""


def private_dir(path: Path) -> str | None:
    """Create `path` (and its parents) 0700; for an existing one open to others, the warning to
    log."""
    try:
        path.mkdir(parents=True, mode=DIR_MODE)  # the umask may take bits off, never add them
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & _OTHERS:
            return (
                f"the data directory {path} is open to other users (mode {mode:04o}): "
                "chmod 700 it (the bridge leaves it as it is; its files in it are 0600)"
            )
    return None


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it is missing; make it 0600 if it is looser."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & _OTHERS:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def hold(directory: Path) -> int:
    """The descriptor holding `directory`'s lock, the pid written in its file; InUse when
    another process holds it."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
    _lock_or_close(fd, directory)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_free(directory: Path) -> None:
    """InUse when another process holds `directory`'s lock; nothing is created or kept (no
    lock file: nobody holds it)."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return
    _lock_or_close(fd, directory)
    os.close(fd)  # lets go of it at once


def check_usable(directory: Path) -> None:
    """OSError when `directory` could not be made or written in; what it makes to find out
    (the missing folders, a file) is removed again."""
    missing = []
    existing = directory
    while not existing.exists():
        missing.append(existing)
        existing = existing.parent
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        with tempfile.TemporaryFile(dir=directory):
            pass
    finally:
        for folder in reversed(made):
            folder.rmdir()


def _lock_or_close(fd: int, directory: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InUse(
            f"{directory} is in use by another n8n-bridge (pid {holder}): one instance per "
            "data directory (run more on Redis, BRIDGE_REDIS_URL)"
        ) from None
