"""Files at rest: the data directory is its owner's only (0700) and so is every file the bridge
keeps in it (0600: the SQLite database and its -wal and -shm files, the dev JWT secret),
whatever the umask.

A data directory that already exists with looser permissions is left as it is, with a warning:
it may be a volume's root or a directory shared on purpose, which the bridge has no business
changing; the files in it are 0600 all the same. Files of the bridge's own that are looser (left
by an older version) are tightened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = 0o077  # any permission for the group or for others


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
