"""Tests for the `ghvault` command, run as a separate process the way operators run it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.metadata
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from server.auth import authenticate
from server.config import Settings
from server.crypto import Keyring
from server.domain.enums import Role
from tests.helpers import ACTIVE_KEY, JWT_SECRET, PROJECT_ROOT, base_env

GHVAULT = Path(sys.executable).parent / "ghvault"
KEY_ENV = "USER_GH_APP_TOKEN_ENCRYPTION_KEY"
START_UP_BOUND_SECONDS = 15.0
# Variables the command reads; the caller's environment must not leak into a test.
READ_PREFIXES = (
    "GHVAULT",
    "AUTH",
    "USER_GH",
    "GITHUB_",
    "GRAPHIQL",
    "GRAPHQL_",
    "PICCOLO",
    "HTTP_",
    "SHUTDOWN_",
)
READ_NAMES = ("DATABASE_URL", "HOST", "PORT")


def clean_env(**settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(READ_PREFIXES) and name not in READ_NAMES
    }
    env.update(settings)
    return env


def ghvault(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GHVAULT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, separator, value = line.partition("=")
            assert separator, line
            values[name.strip()] = value.strip()
    return values


def assert_one_safe_error_line(
    result: subprocess.CompletedProcess[str], variable: str, *hidden: str
) -> None:
    """Exit 2 with one line on stderr that names the variable and repeats no value."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("ghvault: configuration error: ")
    assert variable in line
    assert "Traceback" not in result.stderr
    for value in hidden:
        assert value not in line
        assert value not in result.stdout


# --- keys generate -----------------------------------------------------------


def test_keys_generate_prints_a_fresh_32_byte_key(tmp_path: Path) -> None:
    """Make sure `keys generate` prints one new base64 key of 32 bytes each time."""
    keys = []
    for _ in range(2):
        result = ghvault("keys", "generate", cwd=tmp_path, env=clean_env())
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("\n") == 1
        key = result.stdout.strip()
        assert len(base64.b64decode(key, validate=True)) == 32
        Keyring.from_env_values(key)
        keys.append(key)
    assert keys[0] != keys[1]


# --- dev-token ---------------------------------------------------------------


def test_dev_token_is_accepted_with_its_role_and_ttl(tmp_path: Path) -> None:
    """Make sure `dev-token` mints a JWT the server accepts, expiring after --ttl."""
    before = datetime.now(UTC)
    result = ghvault(
        "dev-token",
        "--sub",
        "u1",
        "--role",
        "admin",
        "--ttl",
        "30m",
        cwd=tmp_path,
        env=clean_env(**base_env()),
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    principal = authenticate("Bearer " + token, Settings.from_env(base_env()).jwt)
    assert principal.id == "u1"
    assert principal.role is Role.ADMIN
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    expected = before + timedelta(minutes=30)
    assert expected - timedelta(seconds=5) <= expires <= expected + timedelta(seconds=30)


def test_dev_token_carries_configured_issuer_and_audience(tmp_path: Path) -> None:
    """Make sure `dev-token` tokens pass a server that checks iss and aud."""
    env = base_env(AUTH_JWT_ISSUER="https://idp.example", AUTH_JWT_AUDIENCE="ghvault")
    result = ghvault(
        "dev-token", "--sub", "svc", "--role", "service", cwd=tmp_path, env=clean_env(**env)
    )
    assert result.returncode == 0, result.stderr
    principal = authenticate("Bearer " + result.stdout.strip(), Settings.from_env(env).jwt)
    assert principal.role is Role.SERVICE


def test_dev_token_rejects_a_bad_ttl(tmp_path: Path) -> None:
    """Make sure a malformed --ttl is a usage error, not a token."""
    result = ghvault(
        "dev-token",
        "--sub",
        "u1",
        "--role",
        "user",
        "--ttl",
        "5x",
        cwd=tmp_path,
        env=clean_env(**base_env()),
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "usage:" in result.stderr
    assert "--ttl" in result.stderr


def test_dev_token_without_jwt_secret_is_a_configuration_error(tmp_path: Path) -> None:
    """Make sure `dev-token` without AUTH_JWT_SECRET exits 2 with one line naming it."""
    env = base_env()
    del env["AUTH_JWT_SECRET"]
    result = ghvault(
        "dev-token", "--sub", "u1", "--role", "user", cwd=tmp_path, env=clean_env(**env)
    )
    assert_one_safe_error_line(result, "AUTH_JWT_SECRET", ACTIVE_KEY)
    assert result.stdout == ""


def test_dev_token_with_only_a_public_key_is_a_configuration_error(tmp_path: Path) -> None:
    """Make sure `dev-token` refuses to run when it has a public key and no secret to sign with."""
    env = base_env(AUTH_JWT_PUBLIC_KEY="-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0C\n")
    del env["AUTH_JWT_SECRET"]
    result = ghvault(
        "dev-token", "--sub", "u1", "--role", "user", cwd=tmp_path, env=clean_env(**env)
    )
    assert_one_safe_error_line(result, "AUTH_JWT_SECRET", "MFkwEwYHKoZIzj0C")
    assert result.stdout == ""


# --- dev-setup ---------------------------------------------------------------


def test_dev_setup_writes_private_working_secrets_once(tmp_path: Path) -> None:
    """Make sure `dev-setup` writes a 0600 .env.local that configures ghvault, and keeps it."""
    result = ghvault("dev-setup", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    env_file = tmp_path / ".env.local"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = read_env_file(env_file)
    assert {KEY_ENV, "AUTH_JWT_SECRET"} <= values.keys()
    settings = Settings.from_env(values)
    assert settings.jwt.secret == values["AUTH_JWT_SECRET"].encode()
    assert not settings.is_production
    assert values[KEY_ENV] not in result.stdout + result.stderr
    assert values["AUTH_JWT_SECRET"] not in result.stdout + result.stderr

    written = env_file.read_bytes()
    again = ghvault("dev-setup", cwd=tmp_path, env=clean_env())
    assert again.returncode == 0, again.stderr
    assert env_file.read_bytes() == written
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_dev_setup_keeps_an_existing_file(tmp_path: Path) -> None:
    """Make sure `dev-setup` never overwrites a .env.local someone already has."""
    env_file = tmp_path / ".env.local"
    env_file.write_text("AUTH_JWT_SECRET=mine\n")
    result = ghvault("dev-setup", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert env_file.read_text() == "AUTH_JWT_SECRET=mine\n"


# --- serve with bad configuration --------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable", "hidden"),
    [
        pytest.param(
            {KEY_ENV: base64.b64encode(bytes(range(31))).decode()},
            KEY_ENV,
            (base64.b64encode(bytes(range(31))).decode(),),
            id="31-byte-key",
        ),
        pytest.param(
            {"AUTH_JWT_SECRET": ACTIVE_KEY},
            KEY_ENV,
            (ACTIVE_KEY, ACTIVE_KEY[:12]),
            id="key-equal-to-jwt-secret",
        ),
        pytest.param(
            {"DATABASE_URL": "mysql://u:hunter2@h/db"},
            "DATABASE_URL",
            ("mysql://u:hunter2@h/db", "hunter2"),
            id="mysql-url",
        ),
    ],
)
def test_serve_with_bad_configuration_exits_with_one_line(
    tmp_path: Path, overrides: dict[str, str], variable: str, hidden: tuple[str, ...]
) -> None:
    """Make sure `serve` refuses bad settings at once: exit 2, one line, no value, no traceback."""
    env = clean_env(**base_env(HOST="127.0.0.1", PORT=str(free_port()), **overrides))
    started = time.monotonic()
    result = ghvault("serve", cwd=tmp_path, env=env, timeout=10)
    assert time.monotonic() - started < 10
    assert_one_safe_error_line(result, variable, *hidden, JWT_SECRET)
    assert result.stderr.strip()


# --- serve end to end --------------------------------------------------------


@pytest.fixture
def served_env(tmp_path: Path) -> dict[str, str]:
    """A migrated SQLite database under tmp_path and the settings that point `serve` at it."""
    env = clean_env(
        **base_env(
            DATABASE_URL=f"sqlite:///{tmp_path}/data/ghvault.sqlite",
            HOST="127.0.0.1",
            PORT=str(free_port()),
        )
    )
    result = ghvault("migrate", "--create", cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "data" / "ghvault.sqlite").is_file()
    return env


@pytest.fixture
def user_token(tmp_path: Path, served_env: dict[str, str]) -> str:
    result = ghvault("dev-token", "--sub", "u1", "--role", "user", cwd=tmp_path, env=served_env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def wait_until_healthy(
    http: aiohttp.ClientSession, base: str, process: asyncio.subprocess.Process, deadline: float
) -> None:
    while True:
        assert process.returncode is None, f"ghvault serve exited with {process.returncode}"
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            pytest.fail(f"/healthz did not answer 200 within {START_UP_BOUND_SECONDS:g} s")
        await asyncio.sleep(0.1)


async def graphql(
    http: aiohttp.ClientSession, base: str, query: str, token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(f"{base}/graphql", json={"query": query}, headers=headers) as response:
        assert response.status == (200 if token else 401), await response.text()
        return await response.json()


async def test_serve_end_to_end(
    tmp_path: Path, served_env: dict[str, str], user_token: str, http: aiohttp.ClientSession
) -> None:
    """Make sure a migrated `serve` answers health, readiness and GraphQL, and logs no secret."""
    base = f"http://127.0.0.1:{served_env['PORT']}"
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(GHVAULT),
        "serve",
        cwd=tmp_path,
        env=served_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stdout = asyncio.create_task(process.stdout.read())
    stderr = asyncio.create_task(process.stderr.read())
    try:
        await wait_until_healthy(http, base, process, started + START_UP_BOUND_SECONDS)

        body = await graphql(http, base, "{ viewer { id role } }", user_token)
        assert body == {"data": {"viewer": {"id": "u1", "role": "USER"}}}
        assert time.monotonic() - started < START_UP_BOUND_SECONDS

        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["database"] is True

        anonymous = await graphql(http, base, "{ viewer { id } }")
        assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert not anonymous.get("data")
    finally:
        await stop(process)
    out, err = (await stdout).decode(), (await stderr).decode()

    assert out == ""
    messages = [json.loads(line)["message"] for line in err.splitlines()]
    assert f"listening on {base}/graphql" in messages
    assert messages[-1] == "stopped"
    for marker in ("ghu_", "ghr_", "eyJ"):
        assert marker not in err
        assert marker not in out
    log_lines = err.splitlines()
    assert log_lines
    for line in log_lines:
        assert isinstance(json.loads(line), dict), line


# --- export-schema -----------------------------------------------------------


def test_export_schema_matches_the_checked_in_schema(tmp_path: Path) -> None:
    """Make sure `export-schema` prints the SDL, identical to schema.graphql at the root."""
    result = ghvault("export-schema", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert "type Query" in result.stdout
    assert "viewer: Viewer!" in result.stdout
    assert result.stdout.endswith("\n")
    checked_in = PROJECT_ROOT / "schema.graphql"
    if not checked_in.exists():
        pytest.skip("schema.graphql is not checked in")
    assert result.stdout == checked_in.read_text()


# --- operator mistakes: one line and a non-zero exit, never a traceback -------------

DATABASE_COMMANDS = [("migrate",), ("keys", "status"), ("keys", "rewrap"), ("refresh-due",)]


@pytest.fixture
def unmigrated_sqlite_url(tmp_path: Path) -> str:
    (tmp_path / "empty.sqlite").touch(mode=0o600)
    return f"sqlite:///{tmp_path}/empty.sqlite"


@pytest.fixture
def unmigrated_postgres_url(postgres_server: Any) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("url", "status", "expected"),
    [
        ("postgres://ghvault:pw-Zq9@127.0.0.1:1/ghvault", 1, "cannot reach the database"),
        ("sqlite:///dta/ghvault.sqlite", 1, "there is no database at"),
        ("unmigrated_sqlite_url", 1, "`ghvault migrate --create`"),
        ("unmigrated_postgres_url", 1, "`ghvault migrate --create`"),
        ("postgres://ghvault:pw-Zq9@db:port/ghvault", 2, "configuration error: DATABASE_URL"),
    ],
    ids=["unreachable", "missing-file", "unmigrated", "unmigrated-postgres", "bad-url"],
)
def test_database_commands_explain_a_database_mistake_in_one_line(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    command: tuple[str, ...],
    url: str,
    status: int,
    expected: str,
) -> None:
    """Make sure every command that opens the database answers each operator mistake with
    one line and a non-zero exit: no traceback, no password, no Piccolo banner, nothing made."""
    if url.startswith("unmigrated"):
        url = request.getfixturevalue(url)
    before = sorted(tmp_path.rglob("*"))
    env = clean_env(**base_env(DATABASE_URL=url))

    result = ghvault(*command, cwd=tmp_path, env=env, timeout=60)

    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ghvault: ")
    assert expected in lines[0]
    assert "pw-Zq9" not in lines[0]
    assert sorted(tmp_path.rglob("*")) == before


def test_version_names_the_installed_release(tmp_path: Path) -> None:
    result = ghvault("--version", cwd=tmp_path, env=clean_env())

    assert result.returncode == 0
    assert result.stdout == f"ghvault {importlib.metadata.version('ghvault')}\n"
    assert result.stdout.split()[1][0].isdigit()


def test_piccolo_names_a_malformed_database_url_in_one_line(tmp_path: Path) -> None:
    """Make sure `piccolo migrations forwards all` (which imports piccolo_conf) does too."""
    env = clean_env(DATABASE_URL="postgres://h1:5432,h2:x/db", PICCOLO_CONF="piccolo_conf")

    result = subprocess.run(
        [str(GHVAULT.parent / "piccolo"), "migrations", "forwards", "all"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "ghvault: configuration error: DATABASE_URL must name a host (or several, "
        "comma-separated) and a database: postgres://host:5432/db"
    ]


def test_ghvault_piccolo_uses_ghvaults_configuration_wherever_it_runs(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """Make sure `ghvault piccolo ...` reaches ghvault's tables and migrations even from a
    folder holding another project's piccolo_conf.py (which plain `piccolo` would pick)."""
    (tmp_path / "piccolo_conf.py").write_text('raise SystemExit("the other project")\n')
    env = clean_env(**base_env(DATABASE_URL=f"sqlite:///{sqlite_template}"))

    checked = ghvault("piccolo", "migrations", "check", cwd=tmp_path, env=env, timeout=60)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the other project" not in checked.stdout + checked.stderr
    ran = [line for line in checked.stdout.splitlines() if line.startswith("ghvault ")]
    assert ran
    assert all(line.rstrip().endswith("True") for line in ran)
