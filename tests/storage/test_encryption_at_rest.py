"""Tokens at rest: only ciphertext, bound to its row and column, readable across rotation."""

from __future__ import annotations

import pytest

from server.config import Settings
from server.crypto import DecryptionError, Keyring, TokenSlot
from tests.domain.test_tokens import all_text
from tests.helpers import (
    ACTIVE_KEY,
    RETIRED_KEY,
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    access_token,
    refresh_token,
    store_input,
)


async def _store_two(gql: GraphQLClient, clock: MovableClock) -> dict[str, tuple[str, str]]:
    tokens = {}
    for user, github_id in (("alice", "1001"), ("bob", "1002")):
        pair = (access_token(), refresh_token())
        variables = store_input(
            user, now=clock(), github_user_id=github_id, access=pair[0], refresh=pair[1]
        )
        result = await gql.data(STORE, variables, auth=SERVICE)
        assert result["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
        tokens[user] = pair
    return tokens


async def _rows(database: Database) -> dict[str, dict]:
    rows = await database.fetch(
        "SELECT user_id, github_app_type, github_user_id, access_token_encrypted,"
        " refresh_token_encrypted FROM user_github_app_tokens"
    )
    return {row["user_id"]: row for row in rows}


def _slot(row: dict, kind: str) -> TokenSlot:
    return TokenSlot(row["user_id"], row["github_app_type"], row["github_user_id"], kind)


async def test_the_database_holds_no_plaintext_token(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """No text column, and on SQLite no byte of the files, contains a stored token."""
    tokens = await _store_two(gql, clock)
    secrets = [token[4:] for pair in tokens.values() for token in pair]

    text = await all_text(database)
    assert not [s for s in secrets if s in text]
    assert "ghu_" not in text
    assert "ghr_" not in text
    if database.is_sqlite:
        await database.fetch("PRAGMA wal_checkpoint(FULL)")
        raw = b"".join(
            path.read_bytes()
            for path in database.sqlite_file.parent.iterdir()
            if path.name.startswith(database.sqlite_file.name)
        )
        assert raw.count(b"v1:") >= 4, "the ciphertexts should be in the file"
        assert not [s for s in secrets if s.encode() in raw]


async def test_stored_values_decrypt_only_in_their_own_place(
    gql: GraphQLClient, clock: MovableClock, database: Database, settings: Settings
) -> None:
    """A ciphertext copied to another row or the other column fails with a clear error."""
    tokens = await _store_two(gql, clock)
    rows = await _rows(database)
    keyring = settings.keyring
    alice, bob = rows["alice"], rows["bob"]

    assert (
        keyring.decrypt(alice["access_token_encrypted"], _slot(alice, "access"))
        == (tokens["alice"][0])
    )
    assert (
        keyring.decrypt(alice["refresh_token_encrypted"], _slot(alice, "refresh"))
        == (tokens["alice"][1])
    )
    misplaced = [
        (alice["access_token_encrypted"], _slot(bob, "access")),
        (alice["access_token_encrypted"], _slot(alice, "refresh")),
        (alice["refresh_token_encrypted"], _slot(alice, "access")),
    ]
    for value, slot in misplaced:
        with pytest.raises(DecryptionError) as caught:
            keyring.decrypt(value, slot)
        message = str(caught.value)
        assert "does not match" in message or "tampered" in message
        assert value not in message


async def test_a_value_made_with_a_retired_key_still_decrypts(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """After rotating (new active key, old one retired) stored tokens still open."""
    tokens = await _store_two(gql, clock)
    row = (await _rows(database))["alice"]
    rotated = Keyring.from_env_values(RETIRED_KEY, ACTIVE_KEY)
    without_old = Keyring.from_env_values(RETIRED_KEY)

    assert rotated.needs_rewrap(row["access_token_encrypted"])
    assert (
        rotated.decrypt(row["access_token_encrypted"], _slot(row, "access")) == (tokens["alice"][0])
    )
    with pytest.raises(DecryptionError, match="unknown key id"):
        without_old.decrypt(row["access_token_encrypted"], _slot(row, "access"))
