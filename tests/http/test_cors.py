"""CORS over plain HTTP: preflights and answers for allowed, refused and unset origins."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.config import ConfigError, Settings, parse_origins
from server.http.app import create_app
from tests.helpers import ADMIN, ALICE, base_env

FRONTEND = "https://app.example.com"
OTHER = "https://evil.example.net"
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods")
VIEWER = {"query": "{ viewer { id } }"}


def preflight_headers(
    origin: str, method: str = "POST", headers: str = "authorization,content-type"
) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.fixture
def make_client(aiohttp_client: Any, sqlite_url: str) -> Any:
    async def make(**env: str) -> TestClient:
        settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url, **env))
        return await aiohttp_client(create_app(settings))

    return make


@pytest.fixture
async def client(make_client: Any) -> TestClient:
    return await make_client(CORS_ALLOWED_ORIGINS=f"{FRONTEND}, http://localhost:3000")


async def test_preflight_from_an_allowed_origin_is_answered(client: TestClient) -> None:
    """Make sure the browser's OPTIONS gets the origin echoed, POST, both headers, a max age."""
    response = await client.options("/graphql", headers=preflight_headers(FRONTEND))

    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (preflight_headers(OTHER), "origin not allowed"),
        (preflight_headers("https://app.example.com.evil.net"), "origin not allowed"),
        (preflight_headers("null"), "origin not allowed"),
        (preflight_headers(FRONTEND, method="DELETE"), "only POST"),
        (preflight_headers(FRONTEND, headers="authorization,x-forwarded-for"), "only the headers"),
    ],
    ids=["other-origin", "suffixed-origin", "null-origin", "method", "header"],
)
async def test_refused_preflights_carry_no_cors_header(
    client: TestClient, headers: dict[str, str], reason: str
) -> None:
    """Make sure a preflight for another origin, method or header is a 403 saying why, with
    nothing a browser would take as permission."""
    response = await client.options("/graphql", headers=headers)

    assert response.status == 403
    assert reason in (await response.json())["error"]
    assert not [name for name in CORS_HEADERS if name in response.headers]


async def test_an_allowed_origin_may_read_the_answer(client: TestClient) -> None:
    """Make sure the POST itself tells the browser the allowed origin may read it."""
    response = await client.post(
        "/graphql", json=VIEWER, headers={"Origin": FRONTEND, "Authorization": ALICE}
    )

    assert response.status == 200
    assert (await response.json())["data"] == {"viewer": {"id": "alice"}}
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert "X-Request-Id" in response.headers["Access-Control-Expose-Headers"]
    assert response.headers["Vary"] == "Origin"


async def test_a_refused_origin_gets_the_answer_without_permission_to_read(
    client: TestClient,
) -> None:
    """Make sure a request from another origin is not told it may be read (the browser then
    hides it), and that the answer varies by origin for caches."""
    response = await client.post(
        "/graphql", json=VIEWER, headers={"Origin": OTHER, "Authorization": ALICE}
    )

    assert not [name for name in CORS_HEADERS if name in response.headers]
    assert response.headers["Vary"] == "Origin"


async def test_error_answers_carry_cors_headers_too(client: TestClient) -> None:
    """Make sure a 400 or 401 reaches the frontend's code, so it can show what was wrong."""
    json_headers = {"Origin": FRONTEND, "Content-Type": "application/json"}
    response = await client.post(
        "/graphql", data="{not json", headers={**json_headers, "Authorization": ADMIN}
    )
    anonymous = await client.post("/graphql", data="{not json", headers=json_headers)

    assert response.status == 400
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert anonymous.status == 401
    assert anonymous.headers["Access-Control-Allow-Origin"] == FRONTEND


async def test_the_origin_must_match_exactly(client: TestClient) -> None:
    """Make sure a configured origin's port counts: localhost:3000 is allowed, :3001 is not."""
    allowed = await client.options("/graphql", headers=preflight_headers("http://localhost:3000"))
    other_port = await client.options(
        "/graphql", headers=preflight_headers("http://localhost:3001")
    )

    assert allowed.status == 204
    assert other_port.status == 403


async def test_without_the_setting_there_is_no_cors(make_client: Any) -> None:
    """Make sure an unset CORS_ALLOWED_ORIGINS sends no CORS header at all."""
    client = await make_client()
    preflight = await client.options("/graphql", headers=preflight_headers(FRONTEND))
    post = await client.post("/graphql", json=VIEWER, headers={"Origin": FRONTEND})

    assert preflight.status == 405
    for response in (preflight, post):
        assert not [name for name in CORS_HEADERS if name in response.headers]
        assert "Vary" not in response.headers


async def test_other_paths_are_not_cross_origin(client: TestClient) -> None:
    """Make sure only /graphql is opened to other origins."""
    response = await client.get("/healthz", headers={"Origin": FRONTEND})

    assert "Access-Control-Allow-Origin" not in response.headers


def test_origins_are_read_as_browsers_send_them() -> None:
    """Make sure configured origins are normalised: case, default ports, a trailing slash."""
    parsed = parse_origins("HTTPS://App.Example.com:443/, http://127.0.0.1:8081,http://[::1]:80")

    assert parsed == ("https://app.example.com", "http://127.0.0.1:8081", "http://[::1]")


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "https://*.example.com",
        "app.example.com",
        "https://app.example.com/path",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "https://app.example.com:99999",
    ],
)
def test_malformed_origins_stop_start_up(value: str) -> None:
    """Make sure a wildcard, a bare host or a URL with more than an origin is refused with one
    line naming the variable."""
    with pytest.raises(ConfigError, match="CORS_ALLOWED_ORIGINS") as raised:
        Settings.from_env(base_env(CORS_ALLOWED_ORIGINS=value))

    assert "\n" not in str(raised.value)
