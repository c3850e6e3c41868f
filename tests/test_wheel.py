"""The wheel holds everything `ghvault migrate` and `ghvault serve` need.

Built from the project's files, installed into a fresh virtualenv outside the
repository, and run from yet another directory, as an operator installs it.
Dependencies come from a local wheelhouse (downloaded once per version of
constraints.txt and kept in the user's cache directory), so only the first
run on a machine reaches the package index.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import PROJECT_ROOT, base_env
from tests.test_cli import clean_env, free_port, graphql, stop

INSTALL_TIMEOUT_SECONDS = 900
CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
# A first start compiles every module of the fresh install: a generous deadline.
READY_WITHIN_SECONDS = 60


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


def pip(*args: str | Path, cwd: Path) -> str:
    return run(sys.executable, "-m", "pip", *args, cwd=cwd)


def project_copy(target: Path) -> Path:
    """The files a clone of the project has (tracked and new, never ignored ones)."""
    listed = run(
        "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=PROJECT_ROOT
    )
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def wheelhouse(wheel: Path, scratch: Path) -> Path:
    """The pinned dependencies of `wheel` as local files, downloaded once per pin set."""
    constraints = CONSTRAINTS.read_bytes()
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith("/METADATA"))
        requires = b"".join(
            line for line in archive.read(metadata).splitlines() if line.startswith(b"Requires")
        )
    digest = hashlib.sha256(constraints + requires).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    house = cache / "ghvault-tests" / f"wheelhouse-{digest}"
    if not house.is_dir():
        download = scratch / "download"
        pip("download", "--quiet", "-c", CONSTRAINTS, "-d", download, wheel, cwd=scratch)
        for own in download.glob("ghvault-*"):
            own.unlink()
        house.parent.mkdir(parents=True, exist_ok=True)
        try:
            download.rename(house)  # whole or not at all, should two runs race
        except OSError:
            assert house.is_dir()
    return house


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv, outside the repository, with the built wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    source = project_copy(root / "source")
    pip("wheel", "--quiet", "--no-deps", "-w", root / "dist", source, cwd=root)
    (wheel,) = (root / "dist").glob("ghvault-*.whl")
    venv = root / "venv"
    # The venv gets no pip of its own (ensurepip is slow); this pip installs into it.
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    pip(
        *("--python", venv / "bin" / "python", "install", "--quiet", "--no-compile"),
        *("--no-index", "--find-links", wheelhouse(wheel, root), "-c", CONSTRAINTS, wheel),
        cwd=root,
    )
    return venv


# The first run on a machine downloads the dependencies; building is not quick either.
@pytest.mark.timeout(INSTALL_TIMEOUT_SECONDS)
async def test_the_installed_wheel_migrates_serves_and_answers_a_query(
    installed: Path, tmp_path: Path
) -> None:
    """Make sure the wheel alone migrates a database, serves it and answers GraphQL."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bin_dir = installed / "bin"
    port = free_port()
    env = clean_env(
        **base_env(DATABASE_URL=f"sqlite:///{tmp_path}/db/ghvault.sqlite", PORT=str(port))
    )
    env.pop("PYTHONPATH", None)

    where = run(
        bin_dir / "python",
        "-c",
        "import server, piccolo_conf; print(server.__file__); print(piccolo_conf.__file__)",
        cwd=elsewhere,
        env=env,
    )
    for path in where.split():
        assert Path(path).is_relative_to(installed), where

    run(bin_dir / "ghvault", "migrate", "--create", cwd=elsewhere, env=env)
    checked = run(bin_dir / "piccolo", "migrations", "check", cwd=elsewhere, env=env)
    ran = [
        line.split("|")[-1].strip() for line in checked.splitlines() if line.startswith("ghvault")
    ]
    shipped = len(list((PROJECT_ROOT / "piccolo_migrations").glob("ghvault_*.py")))
    assert ran == ["True"] * shipped, checked
    token = run(
        bin_dir / "ghvault", "dev-token", "--sub", "u1", "--role", "user", cwd=elsewhere, env=env
    ).strip()

    base = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        str(bin_dir / "ghvault"),
        "serve",
        cwd=elsewhere,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        try:
            while True:
                assert process.returncode is None, "the installed ghvault serve exited"
                try:
                    async with http.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the installed server never became ready"
                await asyncio.sleep(0.2)
            body = await graphql(http, base, "{ viewer { id role } }", token)
            async with http.get(f"{base}/graphql", headers={"Accept": "text/html"}) as response:
                page = await response.text()
            statuses = {}
            for asset in re.findall(r'(?:src|href)="(/graphiql/[^"]+)"', page):
                async with http.get(base + asset) as response:
                    statuses[asset] = response.status
        finally:
            await stop(process)
    assert body == {"data": {"viewer": {"id": "u1", "role": "USER"}}}
    # GraphiQL's scripts and styles are package data: the installed server serves them all.
    assert len(statuses) == 8
    assert set(statuses.values()) == {200}, statuses
