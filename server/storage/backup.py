"""A consistent copy of the SQLite database, taken while the server runs (`ghvault backup`).

SQLite's online backup API copies the pages in one step, inside one read
transaction: in WAL mode that is a snapshot writers do not wait for, so the
copy holds every transaction committed before it started and nothing of
any later one. The copy is written beside its destination, checked, and
linked into place only when whole; an existing file is never replaced.
Restoring is pointing DATABASE_URL at the copy.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

# Writers hold the lock only briefly; a backup waits for a gap this long at most.
BUSY_TIMEOUT_SECONDS = 30.0


class BackupError(Exception):
    """The backup could not be made; the message is one line for the operator."""


@dataclass(frozen=True)
class BackupReport:
    pages: int
    size_bytes: int


def backup_sqlite(source: Path, target: Path) -> BackupReport:
    """Copy the database at `source` to the new file `target`, consistently."""
    if not source.is_file():
        raise BackupError(f"there is no SQLite database at {source}")
    if target.exists():
        raise BackupError(f"{target} exists: give the backup a new file name")
    if not target.parent.is_dir():
        raise BackupError(f"the directory {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    # The copy holds the same secrets as the database: private from the start.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        pages = _copy(source, partial)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        try:
            os.link(partial, target)  # unlike a rename, never replaces a file
        except FileExistsError:
            raise BackupError(f"{target} exists: give the backup a new file name") from None
    finally:
        partial.unlink(missing_ok=True)
    return BackupReport(pages=pages, size_bytes=target.stat().st_size)


def _copy(source: Path, partial: Path) -> int:
    try:
        with (
            closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT_SECONDS)) as database,
            closing(sqlite3.connect(partial)) as copy,
        ):
            database.backup(copy)  # all pages in one step: one snapshot
            # One self-contained file, whatever journal mode the source uses.
            copy.execute("PRAGMA journal_mode = DELETE")
            (check,) = copy.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise BackupError("the copy failed SQLite's integrity check; nothing was written")
            (pages,) = copy.execute("PRAGMA page_count").fetchone()
            return int(pages)
    except sqlite3.Error as exc:
        raise BackupError(f"the backup failed: {exc}") from None
