"""graphql-http's audit suite (the GraphQL-over-HTTP specification's checks) against ghvault.

The audits come from the npm registry, pinned in graphql_http_audit/package-lock.json
and installed with `npm ci` into a temporary folder once per run. Without npm the test
is skipped, loudly, unless GHVAULT_REQUIRE_NPM=1 (CI sets it), which makes that a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.config import Settings
from server.http.app import create_app
from tests.helpers import ADMIN, base_env

AUDIT_DIR = Path(__file__).parent / "graphql_http_audit"
NPM_INSTALL_TIMEOUT_SECONDS = 300
AUDIT_TIMEOUT_SECONDS = 60
# The audits of optional features ghvault leaves out: GraphQL over GET (served nowhere,
# so a link or a cache cannot run an operation; GET answers 405).
NOT_OFFERED = {
    "5A70": "MAY accept application/x-www-form-urlencoded formatted GET requests",
    "D6D5": "MAY allow URL-encoded JSON string {variables} parameter in GETs when "
    "accepting application/graphql-response+json",
    "6A70": "MAY allow URL-encoded JSON string {variables} parameter in GETs when "
    "accepting application/json",
}


@pytest.fixture(scope="session")
def audit_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """audit.mjs beside its pinned node_modules, in a folder of this run's own."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        reason = "no node and npm on PATH (apt-get install nodejs npm)"
        if os.environ.get("GHVAULT_REQUIRE_NPM", "") in ("1", "true", "yes"):
            pytest.fail(f"{reason}, and GHVAULT_REQUIRE_NPM is set")
        pytest.skip(f"graphql-http audit skipped: {reason}")
    folder = tmp_path_factory.mktemp("graphql-http-audit")
    for name in ("package.json", "package-lock.json", "audit.mjs"):
        shutil.copyfile(AUDIT_DIR / name, folder / name)
    installed = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=NPM_INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return folder / "audit.mjs"


async def _audit(url: str, script: Path) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        cwd=script.parent,
        env={**os.environ, "GHVAULT_URL": url, "GHVAULT_AUTHORIZATION": ADMIN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), AUDIT_TIMEOUT_SECONDS)
    assert process.returncode == 0, stderr.decode()
    results: list[dict[str, Any]] = json.loads(stdout)
    return results


@pytest.mark.parametrize(
    "env",
    [{}, {"GHVAULT_ENV": "production", "GRAPHIQL_ENABLED": "true"}],
    ids=["development", "production"],
)
async def test_graphql_http_audits_pass(
    aiohttp_client: Any, sqlite_url: str, audit_script: Path, env: dict[str, str]
) -> None:
    """Make sure every audit passes (MUST and SHOULD alike) but those of GET requests.

    The audits query introspection fields (`__type`), hence GraphiQL on in production.
    """
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url, **env))
    client = await aiohttp_client(create_app(settings))

    results = await _audit(str(client.make_url("/graphql")), audit_script)

    failed = {result["id"]: result for result in results if result["status"] != "ok"}
    assert len(results) > 50
    assert {key: result["name"] for key, result in failed.items()} == NOT_OFFERED, failed
    assert {result["status"] for result in failed.values()} == {"notice"}
