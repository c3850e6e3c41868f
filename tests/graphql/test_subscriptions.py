"""githubTokenChanged over graphql-transport-ws: who may watch, what they see, and when."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.config import Settings
from server.domain.enums import Role
from server.domain.webhook import sign
from server.http.app import create_app
from server.http.appkeys import TOKEN_CHANGES
from server.http.websocket import TOKEN_EXPIRED_CODE
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    PURGE,
    REVOKE,
    SECRET_PATTERN,
    SERVICE,
    STORE,
    WEBHOOK_SECRET,
    Database,
    GraphQLClient,
    MovableClock,
    base_env,
    bearer,
    github_env,
    store_input,
)
from tests.seeding import seed_tokens
from tests.ws_client import GraphQLWebSocket, connect

CHANGED = """
subscription Changed($appType: GithubAppType, $userId: ID) {
  githubTokenChanged(appType: $appType, userId: $userId) {
    userId appType state needsReconnect githubLogin accessTokenExpiresAt revocationReason
  }
}
"""


async def _watch(
    socket: GraphQLWebSocket, auth: str, variables: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """Authenticate, subscribe, and return the operation id and the first (current) status."""
    assert (await socket.init(auth))["type"] == "connection_ack"
    operation = await socket.subscribe(CHANGED, variables)
    first = await socket.next_payload(operation)
    assert "errors" not in first, first
    return operation, first["data"]["githubTokenChanged"]


async def _next_state(socket: GraphQLWebSocket, operation: str) -> dict[str, Any]:
    payload = await socket.next_payload(operation)
    assert "errors" not in payload, payload
    return payload["data"]["githubTokenChanged"]


def _no_secret_in(socket: GraphQLWebSocket, *secrets: str) -> None:
    frames = "\n".join(socket.frames)
    assert not SECRET_PATTERN.findall(frames)
    for secret in secrets:
        assert secret not in frames


async def test_a_user_sees_store_and_revoke_of_their_token(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """First the current status, then one push per change; never a token in a frame."""
    variables = store_input("alice", now=clock())
    access = variables["input"]["accessToken"]
    refresh = variables["input"]["refreshToken"]

    async with connect(gql.http) as socket:
        operation, first = await _watch(socket, ALICE)
        assert (first["userId"], first["state"]) == ("alice", "NOT_CONNECTED")

        await gql.data(STORE, variables, auth=SERVICE)
        stored = await _next_state(socket, operation)
        await gql.data(REVOKE, {"input": {}}, auth=ALICE)
        revoked = await _next_state(socket, operation)

    assert (stored["state"], stored["githubLogin"]) == ("ACTIVE", "octocat")
    assert (revoked["state"], revoked["revocationReason"]) == ("REVOKED", "USER_REVOKED")
    _no_secret_in(socket, access, refresh)


async def test_an_admin_watches_any_user_and_sees_a_purge(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    await gql.data(STORE, store_input("bob", now=clock()), auth=SERVICE)

    async with connect(gql.http) as socket:
        operation, first = await _watch(socket, ADMIN, {"userId": "bob"})
        await gql.data(PURGE, {"userId": "bob"}, auth=ADMIN)
        purged = await _next_state(socket, operation)

    assert first["state"] == "ACTIVE"
    assert (purged["userId"], purged["state"], purged["needsReconnect"]) == (
        "bob",
        "NOT_CONNECTED",
        True,
    )


async def test_a_change_made_by_another_process_is_pushed(
    gql: GraphQLClient, database: Database, settings: Settings, fake_github: FakeGitHub
) -> None:
    """`ghvault refresh-due` in its own process refreshes; this server's subscriber hears it.

    PostgreSQL carries it by NOTIFY, SQLite by each process watching the file.
    """
    now = datetime.now(UTC)
    (seeded,) = await seed_tokens(
        settings.keyring,
        now=now,
        count=1,
        expiries=[(timedelta(hours=8), timedelta(days=5))],
        fake=fake_github,
        prefix="carol",
    )
    env = {**os.environ, **base_env(DATABASE_URL=database.url, **github_env(fake_github))}
    carol = bearer(seeded.user_id, Role.USER)

    async with connect(gql.http) as socket:
        operation, first = await _watch(socket, carol)
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "ghvault"),
            "refresh-due",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        refreshed = await _next_state(socket, operation)

    assert fake_github.calls["refresh"] == 1
    assert first["state"] == refreshed["state"] == "ACTIVE"
    assert refreshed["accessTokenExpiresAt"] != first["accessTokenExpiresAt"]
    _no_secret_in(socket, seeded.access_token, seeded.refresh_token)


@pytest.mark.parametrize(
    "payload",
    [None, "Bearer not-a-jwt", bearer("alice", Role.USER, ttl=-timedelta(minutes=1))],
    ids=["no-token", "garbage", "expired"],
)
async def test_a_socket_without_a_valid_token_is_refused(
    gql: GraphQLClient, payload: str | None
) -> None:
    """No, malformed or expired credentials in connection_init: closed 4403, nothing served."""
    async with connect(gql.http) as socket:
        await socket.send(
            {"type": "connection_init", "payload": {"Authorization": payload} if payload else {}}
        )
        closed = await socket.closed()
    assert closed.code == 4403
    assert socket.frames == []


async def test_a_header_alone_does_not_authenticate_a_socket(gql: GraphQLClient) -> None:
    """The upgrade request's Authorization header is not the protocol's way: refused."""
    socket_response = await gql.http.ws_connect(
        "/graphql", protocols=["graphql-transport-ws"], headers={"Authorization": ALICE}
    )
    socket = GraphQLWebSocket(socket_response)
    try:
        await socket.send({"type": "connection_init", "payload": {}})
        assert (await socket.closed()).code == 4403
    finally:
        await socket_response.close()


async def test_a_frontend_on_another_origin_may_subscribe(gql: GraphQLClient) -> None:
    """Browsers send Origin; the token in connection_init is what counts, not the page."""
    socket_response = await gql.http.ws_connect(
        "/graphql", protocols=["graphql-transport-ws"], headers={"Origin": "https://app.example"}
    )
    socket = GraphQLWebSocket(socket_response)
    try:
        _, first = await _watch(socket, ALICE)
    finally:
        await socket_response.close()
    assert first["state"] == "NOT_CONNECTED"


@pytest.mark.parametrize(
    "payload",
    [
        {"query": "{ a\u0000 }"},
        {"query": CHANGED, "variables": {"userId": "alice\ud800"}},
    ],
    ids=["nul", "lone-surrogate"],
)
async def test_unstorable_text_in_a_message_closes_the_socket(
    gql: GraphQLClient, log_output: Any, payload: dict[str, Any]
) -> None:
    """Refused as a malformed message (4400), as HTTP refuses it with a 400."""
    async with connect(gql.http) as socket:
        await _watch(socket, ALICE)
        await socket.send({"id": "2", "type": "subscribe", "payload": payload})
        closed = await socket.closed()
    assert closed.code == 4400
    assert '"level": "ERROR"' not in log_output.getvalue()


async def test_subscribing_before_connection_init_is_refused(gql: GraphQLClient) -> None:
    async with connect(gql.http) as socket:
        await socket.subscribe(CHANGED)
        assert (await socket.closed()).code == 4401


@pytest.mark.parametrize(
    ("auth", "variables", "code"),
    [
        (ALICE, {"userId": "bob"}, "FORBIDDEN"),
        (SERVICE, {"userId": "alice"}, "FORBIDDEN"),
        (ADMIN, {}, "INVALID_INPUT"),
    ],
    ids=["user-on-another-user", "service", "admin-without-user-id"],
)
async def test_who_may_watch_which_token(
    gql: GraphQLClient, auth: str, variables: dict[str, Any], code: str
) -> None:
    """A USER only their own token, an ADMIN any (naming it), a SERVICE none."""
    async with connect(gql.http) as socket:
        assert (await socket.init(auth))["type"] == "connection_ack"
        payload = await socket.next_payload(await socket.subscribe(CHANGED, variables))
    assert [error["extensions"]["code"] for error in payload["errors"]] == [code]
    assert payload.get("data") is None


async def test_a_connection_is_closed_when_its_token_expires(gql: GraphQLClient) -> None:
    """The socket does not outlive the JWT that opened it."""
    short = bearer("alice", Role.USER, ttl=timedelta(seconds=2))
    async with connect(gql.http) as socket:
        await _watch(socket, short)
        closed = await socket.closed(wait=30)
    assert closed.code == TOKEN_EXPIRED_CODE
    assert "expired" in closed.reason


async def test_open_subscriptions_per_principal_are_capped(
    database: Database, settings: Settings, clock: MovableClock, aiohttp_client: Any
) -> None:
    """Past the cap a subscription is refused; completing one makes room again."""
    app = create_app(settings, clock=clock, engine=database.engine)
    app[TOKEN_CHANGES].limit_per_principal = 2
    client = await aiohttp_client(app)

    async with connect(client) as first_socket, connect(client) as second_socket:
        first, _ = await _watch(first_socket, ALICE)
        await _watch(second_socket, ALICE)
        refused = await first_socket.next_payload(await first_socket.subscribe(CHANGED))
        await first_socket.complete(first)
        async with asyncio.timeout(15):
            while app[TOKEN_CHANGES].open_subscriptions("alice") > 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        again = await first_socket.next_payload(await first_socket.subscribe(CHANGED))

    assert [error["extensions"]["code"] for error in refused["errors"]] == [
        "TOO_MANY_SUBSCRIPTIONS"
    ]
    assert again["data"]["githubTokenChanged"]["state"] == "NOT_CONNECTED"


async def test_a_revocation_by_webhook_reaches_the_user(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """GitHub telling ghvault the user revoked the app is pushed like any other change."""
    access, refresh = fake_github.seed_token(STANDARD_APP.client_id, 583231, "octocat")
    await gql.data(
        STORE, store_input("alice", now=clock(), access=access, refresh=refresh), auth=SERVICE
    )
    body = b'{"action": "revoked", "sender": {"id": 583231, "login": "octocat"}}'

    async with connect(gql.http) as socket:
        operation, first = await _watch(socket, ALICE)
        response = await gql.http.post(
            "/webhooks/github",
            data=body,
            headers={
                "X-GitHub-Event": "github_app_authorization",
                "X-GitHub-Delivery": "delivery-1",
                "X-Hub-Signature-256": sign(WEBHOOK_SECRET.encode(), body),
                "Content-Type": "application/json",
            },
        )
        assert response.status < 300
        revoked = await _next_state(socket, operation)

    assert first["state"] == "ACTIVE"
    assert (revoked["state"], revoked["revocationReason"]) == ("REVOKED", "USER_REVOKED")


async def test_a_checkout_alone_pushes_nothing(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """The commit worker using a token notes lastUsedAt and its window; not worth a push."""
    access, refresh = fake_github.seed_token(STANDARD_APP.client_id, 583231, "octocat")
    await gql.data(
        STORE, store_input("alice", now=clock(), access=access, refresh=refresh), auth=SERVICE
    )
    checkout = 'mutation { checkoutGithubToken(userId: "alice") { __typename } }'

    async with connect(gql.http) as socket:
        operation, first = await _watch(socket, ALICE)
        checked_out = await gql.data(checkout, auth=SERVICE)
        await gql.data(REVOKE, {"input": {}}, auth=ALICE)
        following = await _next_state(socket, operation)

    assert checked_out["checkoutGithubToken"]["__typename"] == "CheckoutSuccess"
    assert first["state"] == "ACTIVE"
    assert following["state"] == "REVOKED"
    _no_secret_in(socket, access, refresh)


async def test_a_disconnect_is_pushed_as_not_connected(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """The user disconnecting in one tab is seen by the subscription of another."""
    access, refresh = fake_github.seed_token(STANDARD_APP.client_id, 583231, "octocat")
    await gql.data(
        STORE, store_input("alice", now=clock(), access=access, refresh=refresh), auth=SERVICE
    )
    disconnect = "mutation { disconnectGithub { __typename } }"

    async with connect(gql.http) as socket:
        operation, first = await _watch(socket, ALICE)
        disconnected = await gql.data(disconnect, auth=ALICE)
        following = await _next_state(socket, operation)

    assert disconnected["disconnectGithub"]["__typename"] == "DisconnectGithubSuccess"
    assert (first["state"], following["state"]) == ("ACTIVE", "NOT_CONNECTED")
    _no_secret_in(socket, access, refresh)
