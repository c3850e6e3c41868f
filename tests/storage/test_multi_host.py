"""A DATABASE_URL naming several PostgreSQL hosts, for failover without a proxy."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

from server.config import parse_database_url
from server.domain import users
from server.storage import engines
from tests.helpers import T0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_first_postgres_host_that_answers_read_write_serves(postgres_url: str) -> None:
    """Make sure asyncpg gets the host list as it is: a first host that refuses is skipped
    and the next one, a primary (`target_session_attrs=read-write`), takes the writes."""
    parts = urlsplit(postgres_url)
    hosts = f"127.0.0.1:{_closed_port()},{parts.hostname}:{parts.port or 5432}"
    user = f"{parts.username}@" if parts.username else ""
    url = urlunsplit(
        parts._replace(netloc=f"{user}{hosts}", query="target_session_attrs=read-write")
    )

    async with engines.serving(engines.create_engine(parse_database_url(url))) as engine:
        await users.ensure_user("multi-host-user", now=T0)
        stored = await users.get_user("multi-host-user")
        await engine.run_ddl("DELETE FROM users WHERE id = 'multi-host-user'")

    assert stored is not None
    assert stored.created_at == T0
