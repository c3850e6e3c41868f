"""The Piccolo app: its tables and the top-level migrations folder."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from server.storage.tables import TABLES

MIGRATIONS_FOLDER = Path(__file__).resolve().parents[2] / "piccolo_migrations"

APP_CONFIG = AppConfig(
    app_name="ghvault",
    migrations_folder_path=str(MIGRATIONS_FOLDER),
    table_classes=list(TABLES),
    migration_dependencies=[],
    commands=[],
)
