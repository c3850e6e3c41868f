"""Users: created on first use, read by admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.storage.tables import User as UserRow


@dataclass(frozen=True)
class UserProfile:
    id: str
    email: str | None
    display_name: str | None
    created_at: datetime
    purged_at: datetime | None


async def ensure_user(
    user_id: str, *, now: datetime, email: str | None = None, display_name: str | None = None
) -> None:
    """Create the user unless it exists; an existing (or purged) user is left as it is."""
    await UserRow.insert(
        UserRow(id=user_id, email=email, display_name=display_name, created_at=now)
    ).on_conflict(action="DO NOTHING")


async def get_user(user_id: str) -> UserProfile | None:
    row = await UserRow.select().where(UserRow.id == user_id).first()
    if row is None:
        return None
    return UserProfile(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        purged_at=row["purged_at"],
    )
