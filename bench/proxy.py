"""The GitHub proxy against going straight to GitHub: git push and clone, and REST GETs.

    .venv/bin/python -m bench.proxy [--size-mb 50] [--repeat 3] [--requests 2000]
                                    [--duration 10] [--connections 16] [--postgres URL]

Three processes besides the driver: "GitHub" (bench/upstream.py: the fake
GitHub's REST API and `git http-backend` behind its CGI wrapper), ghvault
(bench/serve.py, production profile, INFO access log to a file) on SQLite
(or a throwaway PostgreSQL database with --postgres), and the clients (the
git CLI; aiohttp for sequential requests; wrk for throughput). Each
operation is run straight to "GitHub" with the token and through ghvault's
proxy with a capability, alternately, so load on the machine falls on both:

- push: a commit of --size-mb of random bytes (incompressible, so the pack
  is as large) into an empty repository; clone: that repository into an
  empty folder. The figure is the median of --repeat runs, and the proxy's
  RSS growth is its peak resident set during the proxied runs (reset before
  each, /proc/PID/clear_refs) less its resident set before them;
- GET /repos/octocat/hello-world: --requests sequential requests each way,
  in alternating blocks of 50 (median and p95 latency, the overhead of the
  proxy the difference of medians), then wrk with --connections connections
  for --duration seconds each way (req/s, and the CPU time ghvault's process
  used per request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import load
from bench.bench import (
    PROJECT_ROOT,
    SERVER_PIDS,
    Target,
    cpu_seconds,
    library_versions,
    machine_facts,
    percentile,
    running_server,
    sqlite_url,
    throwaway_postgres,
)
from tests.fake_github import STANDARD_APP
from tests.git_host import run_git
from tests.helpers import ISSUE_CAPABILITY, SERVICE, STORE, base_env, migrate, store_input

BLOCK = 50
REST_PATH = "/repos/octocat/hello-world"
START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Options:
    size_mb: int
    repeat: int
    requests: int
    duration: float
    connections: int
    postgres: str | None


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server instead of SQLite")
    args = parser.parse_args(argv)
    return Options(
        args.size_mb, args.repeat, args.requests, args.duration, args.connections, args.postgres
    )


# ---------------------------------------------------------------- processes


@dataclass(frozen=True)
class Upstream:
    api: str
    git: str
    access_token: str
    refresh_token: str
    pid: int


@contextlib.asynccontextmanager
async def running_upstream(root: Path) -> AsyncIterator[Upstream]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.upstream",
        "--root",
        str(root),
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_SECONDS)
        yield Upstream(**json.loads(line), pid=process.pid)
    finally:
        process.terminate()
        await process.wait()


def ghvault_env(database_url: str, upstream: Upstream) -> dict[str, str]:
    return base_env(
        GHVAULT_ENV="production",
        DATABASE_URL=database_url,
        GITHUB_APP_CLIENT_ID=STANDARD_APP.client_id,
        GITHUB_APP_CLIENT_SECRET=STANDARD_APP.client_secret,
        GITHUB_OAUTH_BASE_URL=upstream.api,
        GITHUB_API_BASE_URL=upstream.api,
        GITHUB_GIT_BASE_URL=upstream.git,
        # The benchmark is the runaway agent the limit exists for.
        GITHUB_PROXY_REQUESTS_PER_MINUTE="100000000",
    )


async def graphql(
    session: aiohttp.ClientSession, base: str, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    async with session.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": SERVICE},
    ) as response:
        body: dict[str, Any] = await response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def capability_for(session: aiohttp.ClientSession, base: str, upstream: Upstream) -> str:
    """Store the upstream's grant for alice, and a WRITE capability for all it reaches."""
    variables = store_input(
        "alice",
        now=datetime.now(UTC),
        access=upstream.access_token,
        refresh=upstream.refresh_token,
    )
    await graphql(session, base, STORE, variables)
    issued = await graphql(
        session,
        base,
        ISSUE_CAPABILITY,
        {"input": {"userId": "alice", "access": "WRITE", "ttlSeconds": 3600}},
    )
    capability: str = issued["issueGithubCapability"]["capability"]
    return capability


# ---------------------------------------------------------------- memory


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> int:
    """Start a new peak for `pid` (VmHWM); its resident set now, in kB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kb(pid, "VmRSS")


def peak(pid: int) -> int:
    return _status_kb(pid, "VmHWM")


# ---------------------------------------------------------------- git


@dataclass
class GitRuns:
    push: dict[str, list[float]]
    clone: dict[str, list[float]]
    rss_before_kb: int = 0
    rss_peak_kb: int = 0


def _url(base: str, user: str, password: str, path: str) -> str:
    scheme, rest = base.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}{path}"


async def make_source(folder: Path, size_mb: int, home: Path) -> None:
    await asyncio.to_thread(folder.mkdir, parents=True)
    assert (await run_git("init", "-q", "-b", "main", cwd=folder, home=home)).returncode == 0
    for index in range(size_mb):
        await asyncio.to_thread((folder / f"blob{index:03}.bin").write_bytes, os.urandom(1 << 20))
    assert (await run_git("add", ".", cwd=folder, home=home)).returncode == 0
    assert (await run_git("commit", "-q", "-m", "data", cwd=folder, home=home)).returncode == 0


async def timed_git(*args: str, cwd: Path, home: Path) -> float:
    started = time.perf_counter()
    result = await run_git(*args, cwd=cwd, home=home)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {result.stderr[-500:]}")
    return elapsed


async def git_runs(
    options: Options, work: Path, upstream: Upstream, ghvault: str, capability: str, pid: int
) -> GitRuns:
    home, source = work / "home", work / "source"
    await asyncio.to_thread(home.mkdir)
    await make_source(source, options.size_mb, home)
    remotes = {
        "direct": lambda path: _url(upstream.git, "x-access-token", upstream.access_token, path),
        "proxy": lambda path: _url(ghvault, "x", capability, f"/github/git{path}"),
    }
    runs = GitRuns(push={"direct": [], "proxy": []}, clone={"direct": [], "proxy": []})
    runs.rss_before_kb = reset_peak(pid)
    for round_ in range(options.repeat):
        order = ("direct", "proxy") if round_ % 2 == 0 else ("proxy", "direct")
        for mode in order:
            repository = f"/bench/{mode}-{round_}.git"
            bare = work / "git-host" / repository.lstrip("/")
            await run_git("init", "-q", "--bare", "-b", "main", str(bare), cwd=work, home=home)
            url = remotes[mode](repository)
            runs.push[mode].append(
                await timed_git("push", "-q", url, "HEAD:main", cwd=source, home=home)
            )
            target = work / f"clone-{mode}-{round_}"
            runs.clone[mode].append(
                await timed_git("clone", "-q", url, str(target), cwd=work, home=home)
            )
            await asyncio.to_thread(shutil.rmtree, target)
            await asyncio.to_thread(shutil.rmtree, bare)
    runs.rss_peak_kb = peak(pid)
    return runs


# ---------------------------------------------------------------- REST


@dataclass(frozen=True)
class RestRuns:
    latency_ms: dict[str, list[float]]
    rate: dict[str, float]
    errors: dict[str, int]
    cpu_us: float | None


async def sequential(
    options: Options, upstream: Upstream, ghvault: str, capability: str
) -> dict[str, list[float]]:
    calls = {
        "direct": (f"{upstream.api}{REST_PATH}", upstream.access_token),
        "proxy": (f"{ghvault}/github/api{REST_PATH}", capability),
    }
    latency: dict[str, list[float]] = {"direct": [], "proxy": []}
    async with aiohttp.ClientSession() as session:
        for block in range(2 * options.requests // BLOCK):
            mode = ("direct", "proxy")[block % 2]
            url, credential = calls[mode]
            headers = {"Authorization": f"Bearer {credential}", "User-Agent": "bench"}
            for _ in range(BLOCK):
                started = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latency[mode].append((time.perf_counter() - started) * 1000)
    return latency


async def throughput(
    options: Options, upstream: Upstream, ghvault: str, capability: str, pid: int
) -> tuple[dict[str, float], dict[str, int], float | None]:
    rate, errors = {}, {}
    cpu: float | None = None
    for mode, base, path, credential in (
        ("direct", upstream.api, REST_PATH, upstream.access_token),
        ("proxy", ghvault, f"/github/api{REST_PATH}", capability),
    ):
        request = load.Request(
            "GET", path, {"Authorization": f"Bearer {credential}", "User-Agent": "wrk"}, None
        )
        before = cpu_seconds(pid)
        result = await asyncio.to_thread(
            load.run,
            base,
            [request],
            expect='"full_name"',
            duration=options.duration,
            connections=options.connections,
        )
        after = cpu_seconds(pid)
        rate[mode], errors[mode] = result.rate, result.errors
        if mode == "proxy" and before is not None and after is not None and result.requests:
            cpu = (after - before) / result.requests * 1e6
    return rate, errors, cpu


# ---------------------------------------------------------------- report


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def report(options: Options, facts: dict[str, str], git: GitRuns, rest: RestRuns) -> str:
    lines = [
        "command:   .venv/bin/python -m bench.proxy " + " ".join(sys.argv[1:]),
        "machine:   " + ", ".join(f"{name} {value}" for name, value in facts.items()),
        f"libraries: {library_versions()}, git {facts.get('git', '?')}",
        "",
        "git (seconds, median of "
        f"{options.repeat}; {options.size_mb} MB of random bytes in one commit)",
    ]
    for operation, runs in (("push", git.push), ("clone", git.clone)):
        direct, proxy = _median(runs["direct"]), _median(runs["proxy"])
        lines.append(
            f"  {operation:<5}  direct {direct:6.2f}  proxy {proxy:6.2f}  "
            f"ratio {proxy / direct:.2f}  (runs: direct "
            + ", ".join(f"{value:.2f}" for value in runs["direct"])
            + "; proxy "
            + ", ".join(f"{value:.2f}" for value in runs["proxy"])
            + ")"
        )
    growth = (git.rss_peak_kb - git.rss_before_kb) / 1024
    lines.append(
        f"  ghvault RSS: {git.rss_before_kb / 1024:.1f} MB before, peak "
        f"{git.rss_peak_kb / 1024:.1f} MB during the proxied runs: growth {growth:.1f} MB"
    )
    lines += ["", f"GET {REST_PATH}"]
    for mode in ("direct", "proxy"):
        ordered = sorted(rest.latency_ms[mode])
        lines.append(
            f"  {mode:<6}  sequential: median {_median(ordered):.2f} ms, "
            f"p95 {percentile(ordered, 95):.2f} ms ({len(ordered)} requests); "
            f"wrk -c{options.connections}: {rest.rate[mode]:.0f} req/s, "
            f"{rest.errors[mode]} errors"
        )
    overhead = _median(rest.latency_ms["proxy"]) - _median(rest.latency_ms["direct"])
    cpu = f"{rest.cpu_us:.0f} us" if rest.cpu_us is not None else "unknown"
    lines.append(f"  proxy overhead: {overhead:.2f} ms (median); ghvault CPU per request: {cpu}")
    return "\n".join(lines)


async def run(options: Options) -> str:
    facts = machine_facts()
    result = await run_git("--version", cwd=PROJECT_ROOT, home=Path(tempfile.gettempdir()))
    facts["git"] = result.stdout.split()[-1]
    with tempfile.TemporaryDirectory(prefix="ghvault-bench-proxy-") as folder:
        work = Path(folder)
        async with contextlib.AsyncExitStack() as stack:
            if options.postgres:
                url, version = await stack.enter_async_context(throwaway_postgres(options.postgres))
                facts["PostgreSQL"] = version
                engine = "postgres"
            else:
                url, engine = sqlite_url(work / "ghvault.sqlite"), "sqlite-pooled"
            await asyncio.to_thread(migrate, url)
            upstream = await stack.enter_async_context(running_upstream(work / "git-host"))
            ghvault = await stack.enter_async_context(
                running_server(
                    Target(engine, url), ghvault_env(url, upstream), work / "ghvault.log"
                )
            )
            pid = SERVER_PIDS[engine]
            async with aiohttp.ClientSession() as session:
                capability = await capability_for(session, ghvault, upstream)
            print("git push and clone...", file=sys.stderr, flush=True)
            git = await git_runs(options, work, upstream, ghvault, capability, pid)
            print("REST GETs...", file=sys.stderr, flush=True)
            latency = await sequential(options, upstream, ghvault, capability)
            rate, errors, cpu = await throughput(options, upstream, ghvault, capability, pid)
            rest = RestRuns(latency, rate, errors, cpu)
            facts["database"] = engine
    return report(options, facts, git, rest)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    print(asyncio.run(run(options)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
