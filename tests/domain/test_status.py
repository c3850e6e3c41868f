"""The SQL state filter and the Python state derivation must never disagree."""

from __future__ import annotations

import itertools
from datetime import timedelta

from server.domain.enums import AppType, TokenState
from server.domain.status import TokenFilter, derive_state, list_statuses
from server.storage.tables import User, UserGithubAppToken
from tests.helpers import T0, Database

HOUR = timedelta(hours=1)


async def test_state_filter_agrees_with_derived_state(database: Database) -> None:
    """Every combination of revocation, expiries and refresh token lands in one state."""
    revoked = (None, T0 - HOUR)
    access_expiry = (None, T0 - HOUR, T0, T0 + HOUR)
    has_refresh = (False, True)
    refresh_expiry = (None, T0 - HOUR, T0 + HOUR)
    expected: dict[str, TokenState] = {}
    for index, (rev, acc, has, ref) in enumerate(
        itertools.product(revoked, access_expiry, has_refresh, refresh_expiry)
    ):
        user_id = f"u{index:03}"
        await User.insert(User(id=user_id))
        await UserGithubAppToken.insert(
            UserGithubAppToken(
                user_id=user_id,
                github_app_type=AppType.STANDARD.value,
                github_user_id=str(index),
                github_login=f"login{index}",
                access_token_encrypted="v1:opaque",
                access_token_expires_at=acc,
                refresh_token_encrypted="v1:opaque" if has else None,
                refresh_token_expires_at=ref,
                revoked_at=rev,
            )
        )
        expected[user_id] = derive_state(
            revoked_at=rev,
            access_token_expires_at=acc,
            has_refresh_token=has,
            refresh_token_expires_at=ref,
            now=T0,
        )

    found: dict[str, TokenState] = {}
    for state in TokenState:
        page = await list_statuses(TokenFilter(state=state), first=100, after=None, now=T0)
        for _, status in page.items:
            assert status.state is state, (status.user_id, state)
            assert status.user_id not in found, "a row matched two states"
            found[status.user_id] = state

    assert found == expected
    assert set(expected.values()) == set(TokenState) - {TokenState.NOT_CONNECTED}
