"""Piccolo configuration: the engine comes from DATABASE_URL (SQLite by default)."""

import os

from piccolo.conf.apps import AppRegistry

from server.config import parse_database_url
from server.storage.engines import create_engine

DB = create_engine(parse_database_url(os.environ.get("DATABASE_URL")))

APP_REGISTRY = AppRegistry(apps=["server.storage.piccolo_app"])
