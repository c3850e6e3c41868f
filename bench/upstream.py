"""GitHub's stand-in for bench/proxy.py, in a process of its own: the fake GitHub and a git host.

    python -m bench.upstream --root DIR

Serves the fake GitHub (tests/fake_github.py: OAuth, REST, the repository
octocat/hello-world) and `git http-backend` over the bare repositories under
DIR (tests/git_host.py), each on 127.0.0.1 at a port the OS chooses, with
one live grant for the GitHub user 583231 (octocat). Once both listen it
prints one JSON line: {"api", "git", "access_token", "refresh_token"}; it
stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Sequence
from pathlib import Path

from tests.fake_github import STANDARD_APP, start_fake_github
from tests.git_host import start_git_host

GITHUB_USER_ID = 583231
LOGIN = "octocat"
REPOSITORY = ("octocat", "hello-world")


async def serve(root: Path) -> None:
    async with (
        start_fake_github() as fake,
        start_git_host(root, fake.is_access_token_valid) as git,
    ):
        fake.repos.add(*REPOSITORY)
        access, refresh = fake.seed_token(STANDARD_APP.client_id, GITHUB_USER_ID, LOGIN)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        facts = {
            "api": fake.base_url,
            "git": git.base_url,
            "access_token": access,
            "refresh_token": refresh,
        }
        print(json.dumps(facts), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="where the bare repositories are")
    asyncio.run(serve(parser.parse_args(argv).root))


if __name__ == "__main__":
    main()
