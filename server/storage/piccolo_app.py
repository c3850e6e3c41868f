"""The Piccolo app: its tables and the top-level migrations folder."""

from piccolo.conf.apps import AppConfig

from server.storage.migration_state import MIGRATIONS_FOLDER
from server.storage.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="ghvault",
    migrations_folder_path=str(MIGRATIONS_FOLDER),
    table_classes=list(TABLES),
    migration_dependencies=[],
    commands=[],
)
