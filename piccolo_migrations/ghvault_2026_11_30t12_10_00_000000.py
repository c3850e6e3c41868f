"""Indexes for the admin lists, so their first page reads an index, not the table.

Raw SQL valid on both engines (expression and partial indexes included).
The token list is newest first (created_at, then id, descending) whatever
the filter: each index ends in that key, so a page is a walk down one index
that stops after `first + 1` rows. The audit log is newest first by id, by
user or by action. `oauth_states.user_id` is what a purge deletes by.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.storage.ddl import run_ddl

ID = "2026-11-30T12:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Indexes for the token list, its filters, the audit log and purges"

# name -> (table, what it indexes); the names are what the tests look for.
INDEXES = {
    # Newest first, no filter, or a filter most rows match (app type, ACTIVE).
    "user_github_app_tokens_newest": ("user_github_app_tokens", "(created_at, id)"),
    # githubLogin compares case-insensitively: lower() in the index and the query.
    "user_github_app_tokens_login_newest": (
        "user_github_app_tokens",
        "(lower(github_login), created_at, id)",
    ),
    # REVOKED: few rows, in list order.
    "user_github_app_tokens_revoked_newest": (
        "user_github_app_tokens",
        "(created_at, id) WHERE revoked_at IS NOT NULL",
    ),
    # EXPIRED and REFRESH_EXPIRED (and a rare ACTIVE): the access expiry compared
    # with now, among tokens not revoked.
    "user_github_app_tokens_live_access_expiry": (
        "user_github_app_tokens",
        "(access_token_expires_at, created_at, id) WHERE revoked_at IS NULL",
    ),
    "audit_events_subject_newest": ("audit_events", "(subject_user_id, id)"),
    "audit_events_action_newest": ("audit_events", "(action, id)"),
    "oauth_states_user": ("oauth_states", "(user_id)"),
}


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="ghvault", description=DESCRIPTION)

    async def add_indexes() -> None:
        await run_ddl(
            f"CREATE INDEX {name} ON {table} {definition}"
            for name, (table, definition) in INDEXES.items()
        )

    async def drop_indexes() -> None:
        await run_ddl(f"DROP INDEX IF EXISTS {name}" for name in INDEXES)

    manager.add_raw(add_indexes)
    manager.add_raw_backwards(drop_indexes)

    return manager
