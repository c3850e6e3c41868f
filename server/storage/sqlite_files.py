"""The SQLite database's files are private: they hold emails, names and GitHub logins.

A database ghvault creates is made 0600 before SQLite opens it, and SQLite
gives its `-wal`, `-shm` and `-journal` files the database's own mode, so
all of them are private whatever the umask; a folder ghvault creates for it
is 0700. Files that exist already are the operator's: they are not changed,
but start-up warns about any that others may read.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger("ghvault.storage")

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
# What SQLite keeps beside the database: the write-ahead log, its index, a rollback journal.
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")


def create_private(path: Path) -> None:
    """Create the database file (and its folder) for the owner alone, unless it exists."""
    if not path.parent.exists():
        os.makedirs(path.parent, mode=PRIVATE_FOLDER_MODE, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(descriptor)


def readable_by_others(path: Path) -> list[tuple[Path, int]]:
    """The database's files that exist with permissions beyond their owner's, and their modes."""
    found = []
    for file in (path, *(path.with_name(path.name + suffix) for suffix in COMPANION_SUFFIXES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            found.append((file, mode))
    return found


def warn_if_readable_by_others(path: Path) -> None:
    for file, mode in readable_by_others(path):
        logger.warning(
            "%s has mode %o: others on this host may read it, and it holds emails, names "
            "and GitHub logins; chmod 600 it",
            file,
            mode,
        )
