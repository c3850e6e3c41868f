"""PostGraphile v4 as a peer of the status read: the same table, no auth.

The performance goal compares ghvault on PostgreSQL with PostGraphile v4
(npm ``postgraphile@4``) serving the same table in the same run. `install`
puts the pinned `VERSION` once into a cache directory outside the repository
(`cache_directory`, reused by later runs) with npm; without node and npm, or
when the install fails, it raises `Unavailable` and the benchmark skips the
peer.

Run as ``python -m bench.postgraphile <Installed.cli>`` by `bench/bench.py`,
like `bench/serve.py`: it starts PostGraphile's own CLI with DATABASE_URL
from the environment (PostGraphile reads it there, so no password is in a
command line), prints ``listening <port>`` once PostGraphile listens, passes
its output on to stderr (the servers' log) and stops it on SIGTERM.
PostGraphile runs as it would in production: ``NODE_ENV=production``, no
GraphiQL, no query log (its help recommends that in production), no JWT;
one Node process with its default pool of 10 connections (ghvault's pool
size), on 127.0.0.1 at a port the OS chooses.

ghvault's unique key (user_id, github_app_type) is a unique index, not a
constraint, and PostGraphile v4 makes a ``...ByUserIdAndGithubAppType`` field
only from constraints, so `STATUS_QUERY` reads one user's STANDARD token
through a condition filter on those two columns (the same index serves it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VERSION = "4.14.1"  # the latest 4.x on npm when this peer was added
INSTALL_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 10.0
POOL_SIZE = 10

# The status columns ghvault's status read selects, less its
# `refresh_token_encrypted IS NOT NULL`: the generated schema can only
# return the ciphertext itself, which a status read deliberately never reads.
STATUS_QUERY = (
    "query Status($userId: String!) { allUserGithubAppTokens("
    'condition: {userId: $userId, githubAppType: "standard"}) '
    "{ nodes { revokedAt accessTokenExpiresAt refreshTokenExpiresAt } } }"
)
# In the body exactly when the user's token was found and is not revoked.
EXPECTED = '"revokedAt":null'

_CLI = Path("node_modules", "postgraphile", "cli.js")
_LISTENING = re.compile(r"listening on port (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Unavailable(Exception):
    """Why the peer cannot run on this machine; the benchmark skips it."""


def cache_directory() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root, "ghvault-bench", f"postgraphile-{VERSION}")


@dataclass(frozen=True)
class Installed:
    cli: Path  # PostGraphile's command-line entry point, run with node
    description: str  # its version and node's, for the report


def install(progress: Callable[[str], None]) -> Installed:
    """Install `VERSION` into `cache_directory` unless it is there.

    npm installs into a fresh directory beside the cache, renamed into place
    once complete, so an interrupted install is never taken for a finished one.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Unavailable("node and npm are not both on PATH")
    directory = cache_directory()
    if not (directory / _CLI).is_file():
        progress(f"installing PostGraphile {VERSION} into {directory} with npm")
        directory.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{directory.name}.partial-", dir=directory.parent))
        try:
            _npm_install(npm, partial)
            try:
                partial.rename(directory)
            except OSError:
                if not (directory / _CLI).is_file():  # not another run's finished install
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    node_version = subprocess.run(  # noqa: S603 -- node on PATH, a fixed argument
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    return Installed(directory / _CLI, f"{VERSION} on node {node_version}")


def _npm_install(npm: str, directory: Path) -> None:
    command = [
        npm,
        "install",
        "--prefix",
        str(directory),
        "--save-exact",
        "--omit=dev",
        "--no-audit",
        "--no-fund",
        f"postgraphile@{VERSION}",
    ]
    try:
        result = subprocess.run(  # noqa: S603 -- npm on PATH, fixed arguments
            command,
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(
            f"npm install postgraphile@{VERSION} took over {INSTALL_TIMEOUT_SECONDS:g} s"
        ) from None
    if result.returncode != 0:
        raise Unavailable(
            f"npm install postgraphile@{VERSION} failed (exit {result.returncode}): "
            + _npm_reason(result.stderr)
        )


def _npm_reason(stderr: str) -> str:
    """The first line of npm's error output that says what went wrong."""
    for line in stderr.splitlines():
        text = line.removeprefix("npm error").removeprefix("npm ERR!").strip()
        if text and text.split()[0] not in ("code", "syscall", "errno"):
            return text
    return "no error output"


async def _port(stdout: asyncio.StreamReader) -> int | None:
    """The port in PostGraphile's greeting; None if it ended its output first."""
    while line := await stdout.readline():
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
        match = _LISTENING.search(_ANSI.sub("", line.decode(errors="replace")))
        if match:
            return int(match.group(1))
    return None


async def _pass_on(stdout: asyncio.StreamReader) -> None:
    while chunk := await stdout.read(65536):
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()


async def serve(cli: str) -> int:
    """Run PostGraphile's `cli` (`Installed.cli`) until SIGTERM; its exit code."""
    node = shutil.which("node")
    if node is None:
        print("no node on PATH", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    process = await asyncio.create_subprocess_exec(
        node,
        cli,
        "--schema",
        "public",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-pool-size",
        str(POOL_SIZE),
        "--disable-graphiql",
        "--disable-query-log",
        env={
            "PATH": os.environ.get("PATH", ""),
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "NODE_ENV": "production",
        },
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    stopped = asyncio.create_task(stop.wait())
    try:
        # Until it listens, then until it is stopped, or ends on its own.
        port = asyncio.create_task(_port(process.stdout))
        await asyncio.wait((port, stopped), return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            return 0
        if port.result() is None:
            return await process.wait() or 1
        print(f"listening {port.result()}", flush=True)
        passing_on = asyncio.create_task(_pass_on(process.stdout))
        await asyncio.wait((passing_on, stopped), return_when=asyncio.FIRST_COMPLETED)
        return 0 if stopped.done() else await process.wait() or 1
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(serve(sys.argv[1])))
