"""Token statistics for admins: counts per state and app type, and how many are due.

The state of a row depends on the time, so nothing can be kept counted: the
counts are grouped counts in SQL at `now` (no decryption, no rows leave the
database), through the same conditions a status filter and a sweep use, so
they cannot drift from what a status read or a sweep would say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.enums import AppType, TokenState
from server.domain.status import STORED_STATES, count_by_state
from server.domain.sweep import DEFAULT_WINDOW, count_due


@dataclass(frozen=True)
class StateCount:
    state: TokenState
    app_type: AppType
    count: int


@dataclass(frozen=True)
class TokenStats:
    by_state: list[StateCount]
    due_for_refresh: int


async def token_stats(now: datetime, within: timedelta = DEFAULT_WINDOW) -> TokenStats:
    """Every (state, app type) pair, zeros included, in a stable order."""
    counts = await count_by_state(now)
    return TokenStats(
        by_state=[
            StateCount(state, app_type, counts[app_type, state])
            for app_type in AppType
            for state in STORED_STATES
        ],
        due_for_refresh=await count_due(now, within),
    )
