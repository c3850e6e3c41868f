"""The SQLite files hold emails, names and GitHub logins: only their owner may read them."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.storage import engines
from server.storage.sqlite_pool import PooledSQLiteEngine
from tests.helpers import migrate


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    """The process's umask (which subprocesses inherit), for the block."""
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


async def _write_something(path: Path) -> PooledSQLiteEngine:
    engine = PooledSQLiteEngine(path=str(path))
    await engine.start_connection_pool()
    await engine.run_ddl("CREATE TABLE IF NOT EXISTS probe (n INTEGER)")
    await engine.run_ddl("INSERT INTO probe VALUES (1)")
    return engine


async def test_a_database_ghvault_creates_is_private_with_its_wal_and_shm(
    tmp_path: Path,
) -> None:
    """Make sure migrating into a missing folder makes the folder 0700 and the database
    0600, and that its -wal and -shm are 0600 while serving, even under a umask of 0."""
    path = tmp_path / "state" / "ghvault.sqlite"
    with umask(0):
        migrate(f"sqlite:///{path}")
        engine = await _write_something(path)
    try:
        wal, shm = path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")
        assert wal.exists()
        assert shm.exists()
        assert {file.name: mode(file) for file in (path, wal, shm)} == {
            "ghvault.sqlite": 0o600,
            "ghvault.sqlite-wal": 0o600,
            "ghvault.sqlite-shm": 0o600,
        }
        assert mode(path.parent) == 0o700
    finally:
        await engines.stop(engine)


async def test_an_existing_folder_is_left_as_it_is(tmp_path: Path) -> None:
    """Only a folder ghvault creates is made 0700; the operator's own stays theirs."""
    os.chmod(tmp_path, 0o740)
    path = tmp_path / "ghvault.sqlite"
    with umask(0):
        engine = await _write_something(path)
    await engines.stop(engine)
    assert mode(tmp_path) == 0o740
    assert mode(path) == 0o600


async def test_start_up_warns_about_files_others_may_read(
    tmp_path: Path, log_output: io.StringIO
) -> None:
    """An existing database (and -wal) readable by others is named with its mode at
    start-up, and left as it is; a private one is not mentioned."""
    path = tmp_path / "ghvault.sqlite"
    wal = path.with_name(path.name + "-wal")
    await engines.stop(await _write_something(path))
    path.chmod(0o644)
    wal.touch()  # as an earlier process may leave it
    wal.chmod(0o640)
    log_output.seek(0)
    log_output.truncate()

    await engines.stop(await _write_something(path))

    warnings = [line for line in log_output.getvalue().splitlines() if "chmod 600" in line]
    assert len(warnings) == 2, log_output.getvalue()
    assert f"{path} has mode 644" in warnings[0]
    assert f"{wal} has mode 640" in warnings[1]
    assert mode(path) == 0o644

    path.chmod(0o600)
    log_output.seek(0)
    log_output.truncate()
    await engines.stop(await _write_something(path))
    assert "chmod 600" not in log_output.getvalue()
