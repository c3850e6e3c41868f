"""Leases: the end of the latest window promised on a token's credential version.

`leased_until` is written by checkouts and reset by every store, refresh and
revocation; an update that changes only it moves no token count (the count
triggers of 2026-11-30T16:00:00 compare the expiries, the revocation and the
refresh token only) and notifies no status subscription (the NOTIFY trigger
of 2026-11-30T12:30:00 compares credential_version and revoked_at only).

`github_rejected` is a new revocation reason. Going backwards drops the
column (windows last an hour at most) and rewrites that reason to
`refresh_failed`, the reason earlier code knows that means the same to a
user: connect again.
"""

from enum import Enum

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Text, Timestamptz
from piccolo.columns.indexes import IndexMethod

from server.storage.ddl import run_ddl

ID = "2026-12-04T10:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Lease end per token and credential version; revocation reason github_rejected"

_REASONS = {"USER_REVOKED": "user_revoked", "REFRESH_FAILED": "refresh_failed", "ADMIN": "admin"}


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="ghvault", description=DESCRIPTION)

    manager.add_column(
        table_class_name="UserGithubAppToken",
        tablename="user_github_app_tokens",
        column_name="leased_until",
        db_column_name="leased_until",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.alter_column(
        table_class_name="UserGithubAppToken",
        tablename="user_github_app_tokens",
        column_name="revocation_reason",
        db_column_name="revocation_reason",
        params={
            "choices": Enum("RevocationReason", {**_REASONS, "GITHUB_REJECTED": "github_rejected"})
        },
        old_params={"choices": Enum("RevocationReason", _REASONS)},
        column_class=Text,
        old_column_class=Text,
        schema=None,
    )

    async def forget_github_rejected() -> None:
        await run_ddl(
            [
                "UPDATE user_github_app_tokens SET revocation_reason = 'refresh_failed' "
                "WHERE revocation_reason = 'github_rejected'"
            ]
        )

    manager.add_raw_backwards(forget_github_rejected)

    return manager
