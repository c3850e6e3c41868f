"""Signed webhook bodies already acted on, so a replay under a new delivery id changes nothing.

Undoing this migration keeps the table and its rows (KeepTablesOnRollback): a
rollback and a migration forwards again must not make a captured body act twice.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Text, Timestamptz
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.indexes import IndexMethod

from server.storage.rollback import KeepTablesOnRollback

ID = "2026-11-30T12:14:21:170244"
VERSION = "1.38.0"
DESCRIPTION = "Signed webhook bodies already acted on (replay protection)"


async def forwards() -> MigrationManager:
    manager = KeepTablesOnRollback(migration_id=ID, app_name="ghvault", description=DESCRIPTION)

    manager.add_table(
        class_name="GithubWebhookPayload",
        tablename="github_webhook_payloads",
        schema=None,
        columns=None,
    )

    manager.add_column(
        table_class_name="GithubWebhookPayload",
        tablename="github_webhook_payloads",
        column_name="body_sha256",
        db_column_name="body_sha256",
        column_class_name="Text",
        column_class=Text,
        params={
            "default": "",
            "null": False,
            "primary_key": True,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="GithubWebhookPayload",
        tablename="github_webhook_payloads",
        column_name="delivery_id",
        db_column_name="delivery_id",
        column_class_name="Text",
        column_class=Text,
        params={
            "default": "",
            "null": False,
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

    manager.add_column(
        table_class_name="GithubWebhookPayload",
        tablename="github_webhook_payloads",
        column_name="received_at",
        db_column_name="received_at",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
        params={
            "default": TimestamptzNow(),
            "null": False,
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

    return manager
