"""The one accepted form of each identifier callers send: user ids and GitHub user ids.

A JWT `sub` and a `userId` argument name the same thing and pass the same
check. GitHub user ids are compared as GitHub compares them, as numbers:
"01001" and "1001" are one account, so only the canonical digits are stored
and looked up.
"""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_USER_ID_LENGTH = 255

_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: int() would also read other scripts' digits


def is_user_id(value: object) -> TypeGuard[str]:
    """1 to 255 printable characters: no NUL, no control or line-breaking characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_USER_ID_LENGTH and value.isprintable()


def canonical_github_user_id(value: object) -> str | None:
    """GitHub's numeric user id as decimal digits without leading zeros; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        return None
    return str(number) if 0 < number < 2**63 else None
