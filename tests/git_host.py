"""A git host for the tests: `git http-backend` (git's own smart HTTP server) on loopback.

It stands in for github.com: Basic credentials `x-access-token:<ghu_...>` are
required, and only a token the fake GitHub holds live is accepted, so a
token killed by a refresh stops working here too. Requests are CGI calls of
`git http-backend`, both bodies streamed through its pipes. Tests may hold a
push in flight: with `hold_pushes` set, a `git-receive-pack` POST waits,
after its credentials were accepted, until the event is set.

`run_git` runs the real git CLI without blocking the event loop the servers
share, with no configuration, credential helper or prompt of the machine's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import hdrs, web

CHUNK_BYTES = 64 * 1024
GIT = shutil.which("git") or "git"


@dataclass
class GitHost:
    root: Path
    token_is_live: Callable[[str], bool]
    base_url: str = ""
    # (method, path, whether the credentials were accepted), in order of arrival.
    seen: list[tuple[str, str, bool]] = field(default_factory=list)
    hold_pushes: asyncio.Event | None = None
    push_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def create_repository(self, owner: str, name: str) -> Path:
        path = self.root / owner / f"{name}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [GIT, "init", "--quiet", "--bare", "--initial-branch=main", str(path)],
            check=True,
            env=git_env(self.root),
        )
        return path

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, token = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            return False
        return user == "x-access-token" and self.token_is_live(token)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        authorized = self._authorized(request.headers.get(hdrs.AUTHORIZATION, ""))
        self.seen.append((request.method, request.path, authorized))
        if not authorized:
            return web.Response(
                status=401,
                text="Bad credentials\n",
                headers={"WWW-Authenticate": 'Basic realm="git"'},
            )
        if request.path.endswith("/git-receive-pack"):
            self.push_arrived.set()
            if self.hold_pushes is not None:
                await self.hold_pushes.wait()
        return await self._backend(request)

    async def _backend(self, request: web.Request) -> web.StreamResponse:
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.root),
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get(hdrs.CONTENT_TYPE, ""),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
        }
        if request.content_length is not None:
            env["CONTENT_LENGTH"] = str(request.content_length)
        for header in ("Content-Encoding", "Git-Protocol"):
            if header in request.headers:
                env["HTTP_" + header.upper().replace("-", "_")] = request.headers[header]
        process = await asyncio.create_subprocess_exec(
            GIT,
            "http-backend",
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        feeding = asyncio.create_task(self._feed(request, process.stdin))
        try:
            status, headers = 200, {}
            while (line := await process.stdout.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                else:
                    headers[name.strip()] = value.strip()
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            while chunk := await process.stdout.read(CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
            await feeding
            await process.wait()
            return response
        except BaseException:
            # Only a process still running is killed: signalling one that has exited
            # reaps it behind asyncio's back, which asyncio then logs.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
            raise
        finally:
            feeding.cancel()

    async def _feed(self, request: web.Request, stdin: asyncio.StreamWriter) -> None:
        try:
            async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                stdin.write(chunk)
                await stdin.drain()
        finally:
            stdin.close()


@asynccontextmanager
async def start_git_host(
    root: Path, token_is_live: Callable[[str], bool]
) -> AsyncIterator[GitHost]:
    """Serve repositories under `root` on 127.0.0.1 (ephemeral port) from this event loop."""
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    host = GitHost(root=root, token_is_live=token_is_live)
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", host.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bound_host, port = runner.addresses[0][:2]
        host.base_url = f"http://{bound_host}:{port}"
        yield host
    finally:
        if host.hold_pushes is not None:
            host.hold_pushes.set()
        await runner.cleanup()


def git_env(home: Path) -> dict[str, str]:
    """The environment of a git command: no config, credential helper or prompt but ours."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_AUTHOR_NAME": "Octo Cat",
        "GIT_AUTHOR_EMAIL": "octocat@example.org",
        "GIT_COMMITTER_NAME": "Octo Cat",
        "GIT_COMMITTER_EMAIL": "octocat@example.org",
    }


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


async def run_git(*args: str, cwd: Path, home: Path) -> GitResult:
    """`git <args>` in `cwd`, awaited without blocking the loop that serves it."""
    process = await asyncio.create_subprocess_exec(
        GIT,
        "-c",
        "credential.helper=",
        "-c",
        "protocol.version=2",
        *args,
        cwd=cwd,
        env=git_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return GitResult(process.returncode, stdout.decode(), stderr.decode())
