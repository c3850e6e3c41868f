"""PostgreSQL: a NOTIFY for every change a token status read would see.

An AFTER trigger on user_github_app_tokens calls pg_notify with the user and
app type, so every write path (store, refresh, revoke, disconnect, purge,
webhook, sweep, and any written later) reaches the status subscriptions of
every ghvault process, delivered only once its transaction commits. An
update that changes neither credential_version nor revoked_at (a checkout
noting last_used_at) notifies nobody. SQLite has no NOTIFY: there each
process watches the table (see server/storage/token_changes.py), so this
migration does nothing on SQLite.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.storage.ddl import migrating_sqlite, run_ddl

ID = "2026-11-30T12:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "PostgreSQL: notify token changes (trigger on user_github_app_tokens)"

CHANNEL = "ghvault_token_changes"

_FORWARDS = (
    f"""
    CREATE FUNCTION ghvault_notify_token_change() RETURNS trigger AS $$
    DECLARE
        changed user_github_app_tokens%ROWTYPE;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            changed := OLD;
        ELSE
            changed := NEW;
        END IF;
        PERFORM pg_notify(
            '{CHANNEL}',
            json_build_object('user_id', changed.user_id, 'app_type', changed.github_app_type)::text
        );
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER user_github_app_tokens_notify_write "
    "AFTER INSERT OR DELETE ON user_github_app_tokens "
    "FOR EACH ROW EXECUTE FUNCTION ghvault_notify_token_change()",
    "CREATE TRIGGER user_github_app_tokens_notify_update "
    "AFTER UPDATE ON user_github_app_tokens FOR EACH ROW "
    "WHEN (OLD.credential_version IS DISTINCT FROM NEW.credential_version "
    "OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at) "
    "EXECUTE FUNCTION ghvault_notify_token_change()",
)

_BACKWARDS = (
    "DROP TRIGGER IF EXISTS user_github_app_tokens_notify_update ON user_github_app_tokens",
    "DROP TRIGGER IF EXISTS user_github_app_tokens_notify_write ON user_github_app_tokens",
    "DROP FUNCTION IF EXISTS ghvault_notify_token_change()",
)


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="ghvault", description=DESCRIPTION)

    async def create_triggers() -> None:
        if not migrating_sqlite():
            await run_ddl(_FORWARDS)

    async def drop_triggers() -> None:
        if not migrating_sqlite():
            await run_ddl(_BACKWARDS)

    manager.add_raw(create_triggers)
    manager.add_raw_backwards(drop_triggers)

    return manager
