"""Token statistics for admins: counts per state and app type, and how many are due.

The state of a row depends on the time, so states cannot be counted as rows
change; what triggers keep instead is, per hour, how many rows have each of
the instants that decide a state (server/storage/token_counts.py). A count at
`now` adds the hours before now's and the rows of now's hour, compared with
`now` as a status filter and a sweep compare them, so the counts cannot drift
from what a status read or a sweep would say. One read serves both figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.enums import AppType, TokenState
from server.domain.status import STORED_STATES, states_from_counts
from server.domain.sweep import DEFAULT_WINDOW, count_due, due_from_counts
from server.storage.token_counts import KEPT_DUE_WINDOW, counts_at


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
    kept = await counts_at(now)
    counts = states_from_counts(kept)
    due = due_from_counts(kept) if within == KEPT_DUE_WINDOW else await count_due(now, within)
    return TokenStats(
        by_state=[
            StateCount(state, app_type, counts[app_type, state])
            for app_type in AppType
            for state in STORED_STATES
        ],
        due_for_refresh=due,
    )
