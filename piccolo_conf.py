"""Piccolo configuration: the engine comes from DATABASE_URL (SQLite by default)."""

import os

from piccolo.conf.apps import AppRegistry

from server.config import ConfigError, database_from_env
from server.storage.engines import create_engine

try:
    DB = create_engine(database_from_env(os.environ))
except ConfigError as exc:
    # Piccolo's CLI imports this module itself: say what is wrong in one line.
    raise SystemExit(f"ghvault: configuration error: {exc}") from None

APP_REGISTRY = AppRegistry(apps=["server.storage.piccolo_app"])
