"""The one accepted form of each identifier callers send: user ids, GitHub user ids,
logins and repositories.

A JWT `sub` and a `userId` argument name the same thing and pass the same
check. GitHub user ids are compared as GitHub compares them, as numbers:
"01001" and "1001" are one account, so only the canonical digits are stored
and looked up. Repositories are compared as GitHub compares them, without
regard to case: "Octocat/Hello-World" is kept as "octocat/hello-world".
"""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_USER_ID_LENGTH = 255

_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: int() would also read other scripts' digits
# A user's or an organization's login: letters, digits and inner hyphens, at most 39.
GITHUB_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


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


def canonical_repository(owner: str, name: str) -> str | None:
    """`owner/name` lower-cased, or None when either part cannot be GitHub's."""
    if not GITHUB_LOGIN.fullmatch(owner) or not _REPOSITORY_NAME.fullmatch(name):
        return None
    if name in (".", ".."):
        return None
    return f"{owner}/{name}".lower()


def parse_repository(text: str) -> str | None:
    """A caller's `owner/name`, canonical, or None when it is not one."""
    owner, slash, name = text.partition("/")
    return canonical_repository(owner, name) if slash else None
