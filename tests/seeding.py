"""Many token rows, fast: bulk inserts of ciphertexts made with the keyring.

Going through storeGithubToken would take a GraphQL call per row; tests that
need a thousand rows only need them stored the way the service stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.crypto import Keyring, TokenSlot
from server.storage.tables import User, UserGithubAppToken
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import access_token, refresh_token

BATCH = 250


@dataclass(frozen=True)
class SeededToken:
    user_id: str
    github_user_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_token_expires_at: datetime
    refresh_token_expires_at: datetime


def token_row(
    keyring: Keyring,
    user_id: str,
    github_user_id: str,
    *,
    access: str,
    refresh: str,
    access_expires_at: datetime,
    refresh_expires_at: datetime,
) -> UserGithubAppToken:
    def seal(value: str, kind: str) -> str:
        return keyring.encrypt(value, TokenSlot(user_id, "standard", github_user_id, kind))

    return UserGithubAppToken(
        user_id=user_id,
        github_app_type="standard",
        github_user_id=github_user_id,
        github_login=f"login{github_user_id}",
        access_token_encrypted=seal(access, "access"),
        access_token_expires_at=access_expires_at,
        refresh_token_encrypted=seal(refresh, "refresh"),
        refresh_token_expires_at=refresh_expires_at,
    )


async def seed_tokens(
    keyring: Keyring,
    *,
    now: datetime,
    count: int,
    expiries: list[tuple[timedelta, timedelta]],
    fake: FakeGitHub | None = None,
    prefix: str = "user",
    first_github_id: int = 500_000,
) -> list[SeededToken]:
    """`count` users of the STANDARD app; row i expires as `expiries[i % len]` says.

    Each entry is (access token lifetime, refresh token lifetime) from `now`.
    With `fake`, the tokens are ones the fake GitHub issued (so they refresh);
    without, they are well-formed tokens GitHub has never seen.
    """
    seeded: list[SeededToken] = []
    users, rows = [], []
    for index in range(count):
        user_id, github_user_id = f"{prefix}{index:05}", str(first_github_id + index)
        access_in, refresh_in = expiries[index % len(expiries)]
        if fake is not None:
            access, refresh = fake.seed_token(
                STANDARD_APP.client_id, int(github_user_id), f"login{github_user_id}"
            )
        else:
            access, refresh = access_token(), refresh_token()
        token = SeededToken(
            user_id, github_user_id, access, refresh, now + access_in, now + refresh_in
        )
        seeded.append(token)
        users.append(User(id=user_id))
        rows.append(
            token_row(
                keyring,
                user_id,
                github_user_id,
                access=access,
                refresh=refresh,
                access_expires_at=token.access_token_expires_at,
                refresh_expires_at=token.refresh_token_expires_at,
            )
        )
    for start in range(0, count, BATCH):
        await User.insert(*users[start : start + BATCH])
        await UserGithubAppToken.insert(*rows[start : start + BATCH])
    return seeded
