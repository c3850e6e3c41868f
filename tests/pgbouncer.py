"""A real PgBouncer in transaction pooling mode, in front of the test PostgreSQL server.

Debian's `pgbouncer` (installed by .ci/run). It refuses to run as root, so
under root it runs as the `postgres` user, from a folder that user owns. Its
pool holds two server connections, so consecutive transactions of one client
connection land on different server connections, as they do under load.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

START_WITHIN_SECONDS = 10.0
SERVER_CONNECTIONS = 2


@dataclass
class PgBouncer:
    port: int
    log: Path

    def url_for(self, direct_url: str) -> str:
        """`direct_url` (a database of the test server) through this PgBouncer."""
        parts = urlsplit(direct_url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer",) if Path(path).exists()), None
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(folder: Path, port: int, server: str) -> str:
    parts = urlsplit(server)
    return f"""
[databases]
* = host={parts.hostname} port={parts.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 500
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_WITHIN_SECONDS
    while True:
        assert process.poll() is None, f"pgbouncer exited: {log.read_text(errors='replace')}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "pgbouncer did not start listening"
            time.sleep(0.05)


@contextmanager
def running_pgbouncer(executable: str, server_url: str) -> Iterator[PgBouncer]:
    """PgBouncer on a free loopback port, forwarding every database to `server_url`'s server."""
    folder = Path(tempfile.mkdtemp(prefix="ghvault-pgbouncer-"))
    port = _free_port()
    user = urlsplit(server_url).username or "postgres"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(_config(folder, port, server_url))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
        for name in ("users.txt", "pgbouncer.ini"):
            (folder / name).chmod(0o644)
    process = subprocess.Popen(
        [executable, str(folder / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user="postgres" if as_root else None,
        group="postgres" if as_root else None,
    )
    try:
        _wait_until_listening(port, process, folder / "pgbouncer.log")
        yield PgBouncer(port=port, log=folder / "pgbouncer.log")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
