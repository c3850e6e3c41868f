"""Keyset pagination: bounded page sizes and opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from server.domain.errors import InvalidInput

MAX_PAGE_SIZE = 100
# Ours are under 100 characters (an ISO timestamp and a UUID, or an integer id).
MAX_CURSOR_LENGTH = 256

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[tuple[str, T]]  # (cursor, item)
    has_next_page: bool

    @property
    def end_cursor(self) -> str | None:
        return self.items[-1][0] if self.items else None


def check_page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE_SIZE} (got {first})", "first")
    return first


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _is_key_part(value: object) -> bool:
    """What encode_cursor puts in a key: strings, and integers an id column holds.

    The integer keys are serial ids, 32-bit on PostgreSQL: a larger number
    is no cursor of ours, and the database would refuse to compare it.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**31) <= value < 2**31
    return isinstance(value, str)


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The key a cursor was made from; InvalidInput for anything else.

    A cursor is the caller's text: it is bounded before decoding, and nothing
    but a flat list of strings and 32-bit integers is let through to a query.
    """
    key = None
    if len(cursor) <= MAX_CURSOR_LENGTH:
        try:
            key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except (binascii.Error, ValueError, RecursionError):
            key = None
    if not isinstance(key, list) or len(key) != arity or not all(map(_is_key_part, key)):
        raise InvalidInput("after is not a cursor from this list", "after")
    return key


def paginate(rows: list[T], first: int, cursor_of: Any) -> Page[T]:
    """`rows` were fetched with a limit of first + 1, to learn whether more follow."""
    return Page(
        items=[(cursor_of(row), row) for row in rows[:first]],
        has_next_page=len(rows) > first,
    )
