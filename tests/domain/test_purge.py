"""purgeUser: GDPR erasure that leaves nothing of the user behind."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import (
    ADMIN,
    PURGE,
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    store_input,
)

USER = """query($id: ID!) { user(id: $id) {
    id email displayName purgedAt githubTokens { appType state githubLogin } } }"""

ALICE_PII = {
    "email": "alice.purge@example.org",
    "displayName": "Alice Purgeworthy",
    "githubLogin": "alice-purge-gh",
    "githubEmail": "alice.gh@example.net",
}


async def _store_alice_and_bob(gql: GraphQLClient, clock: MovableClock) -> None:
    for app_type, github_id in (("STANDARD", "7001"), ("LITE", "7001")):
        variables = store_input(
            "alice", now=clock(), app_type=app_type, github_user_id=github_id, **ALICE_PII
        )
        await gql.data(STORE, variables, auth=SERVICE)
    bob = store_input("bob", now=clock(), github_user_id="7002", github_login="bob-gh")
    await gql.data(STORE, bob, auth=SERVICE)


async def test_purge_erases_the_user_and_only_that_user(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Profile nulled, purgedAt set, every token row gone; other users untouched."""
    await _store_alice_and_bob(gql, clock)

    result = (await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN))["purgeUser"]

    assert result["__typename"] == "PurgeUserSuccess"
    assert (result["userId"], result["deletedTokens"], result["alreadyPurged"]) == (
        "alice",
        2,
        False,
    )
    alice = (await gql.data(USER, {"id": "alice"}, auth=ADMIN))["user"]
    assert (alice["email"], alice["displayName"]) == (None, None)
    assert alice["purgedAt"] == clock().isoformat()
    assert [token["state"] for token in alice["githubTokens"]] == ["NOT_CONNECTED"] * 2
    assert (
        await database.fetch("SELECT id FROM user_github_app_tokens WHERE user_id = 'alice'") == []
    )
    bob = (await gql.data(USER, {"id": "bob"}, auth=ADMIN))["user"]
    assert bob["githubTokens"][0] == {
        "appType": "STANDARD",
        "state": "ACTIVE",
        "githubLogin": "bob-gh",
    }


async def test_purging_twice_reports_already_purged(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """The second purge succeeds, deletes nothing and keeps the first purgedAt."""
    await _store_alice_and_bob(gql, clock)
    first = (await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN))["purgeUser"]
    clock.advance(timedelta(seconds=1))

    second = (await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN))["purgeUser"]

    assert second["alreadyPurged"] is True
    assert second["deletedTokens"] == 0
    assert second["purgedAt"] == first["purgedAt"]


async def test_purging_an_unknown_user_is_not_found(gql: GraphQLClient) -> None:
    result = (await gql.data(PURGE, {"userId": "nobody"}, auth=ADMIN))["purgeUser"]
    assert result["code"] == "NOT_FOUND"


async def test_purged_bytes_are_gone_from_the_sqlite_files(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """No byte of the email, name, GitHub login/email or ciphertexts is left on disk."""
    if not database.is_sqlite:
        pytest.skip("PostgreSQL reclaims dead tuples with VACUUM, on the operator's schedule")
    await _store_alice_and_bob(gql, clock)
    ciphertexts = [
        value
        for row in await database.fetch(
            "SELECT access_token_encrypted, refresh_token_encrypted"
            " FROM user_github_app_tokens WHERE user_id = 'alice'"
        )
        for value in row.values()
    ]
    needles = [value.encode() for value in (*ALICE_PII.values(), *ciphertexts)]

    def on_disk() -> bytes:
        folder = database.sqlite_file.parent
        return b"".join(
            path.read_bytes()
            for path in folder.iterdir()
            if path.name.startswith(database.sqlite_file.name)
        )

    assert all(needle in on_disk() for needle in needles), "the data was on disk before"

    await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN)

    left = [needle.decode() for needle in needles if needle in on_disk()]
    assert left == []
    assert b"bob-gh" in on_disk()
