"""The `ghvault` command (also `python -m server`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from server.config import ConfigError, Settings, database_from_env
from server.crypto import generate_key
from server.domain.enums import Role

DEV_ENV_FILE = Path(".env.local")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run  # each command sets it (set_defaults)
    from server.storage.migration_state import DatabaseNotReady

    try:
        return run(args)
    except ConfigError as exc:
        print(f"ghvault: configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseNotReady as exc:
        print(f"ghvault: {exc}", file=sys.stderr)
        return 1


def _version() -> str:
    try:
        return version("ghvault")
    except PackageNotFoundError:  # run from a folder, not installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghvault", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ghvault {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to listen on (default: HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to listen on (default: PORT, else 8080)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT; default 1)",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate", help="run every pending migration (forwards all), or undo some (--backwards)"
    )
    migrate.add_argument(
        "--create",
        action="store_true",
        help="the database may be new: create the SQLite file (and its folder), or set up "
        "a PostgreSQL database that holds no ghvault tables yet",
    )
    migrate.add_argument(
        "--backwards",
        metavar="MIGRATION_ID",
        help="undo the migrations from this one (or `all`) to the latest",
    )
    migrate.add_argument(
        "--drop-data",
        action="store_true",
        help="with --backwards: undo even migrations whose tables hold rows, dropping them",
    )
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser("dev-token", help="mint a JWT from AUTH_JWT_SECRET")
    token.add_argument("--sub", required=True, help="user or service id")
    token.add_argument("--role", required=True, choices=[role.value for role in Role])
    token.add_argument("--ttl", type=_duration, default=timedelta(hours=8), help="e.g. 30m, 8h, 7d")
    token.add_argument("--email")
    token.add_argument("--name")
    token.set_defaults(run=_dev_token)

    keys = commands.add_parser("keys", help="encryption keys")
    key_commands = keys.add_subparsers(required=True, metavar="KEYS_COMMAND")
    generate = key_commands.add_parser("generate", help="print a new 32-byte key (base64)")
    generate.set_defaults(run=lambda _args: _print(generate_key()))
    status = key_commands.add_parser("status", help="stored values per key id and column")
    status.set_defaults(run=_keys_status)
    rewrap = key_commands.add_parser(
        "rewrap", help="re-encrypt every value not under the active key (resumable)"
    )
    rewrap.add_argument("--batch", type=_positive, default=200, help="rows per transaction")
    rewrap.set_defaults(run=_keys_rewrap)

    refresh = commands.add_parser(
        "refresh-due",
        help="refresh tokens whose refresh token expires soon or whose access token expired",
    )
    refresh.add_argument(
        "--within", type=_positive, default=30, metavar="DAYS", help="window (default 30 days)"
    )
    refresh.add_argument("--limit", type=_positive, default=None, help="at most N tokens")
    refresh.set_defaults(run=_refresh_due)

    setup = commands.add_parser(
        "dev-setup", help=f"write development secrets to {DEV_ENV_FILE} unless it exists"
    )
    setup.set_defaults(run=_dev_setup)

    backup = commands.add_parser(
        "backup", help="copy the SQLite database consistently (safe while serving)"
    )
    backup.add_argument("path", type=Path, help="the new file to write the copy to")
    backup.set_defaults(run=_backup)

    piccolo = commands.add_parser(
        "piccolo",
        help="Piccolo's CLI on this ghvault's tables and migrations, e.g. `ghvault piccolo "
        "migrations check` (whatever piccolo_conf.py the working directory holds)",
    )
    piccolo.add_argument("arguments", nargs=argparse.REMAINDER, help="what `piccolo` takes")
    piccolo.set_defaults(run=_piccolo)

    export = commands.add_parser("export-schema", help="print the GraphQL SDL")
    export.set_defaults(run=_export_schema)
    return parser


def _print(text: str) -> int:
    print(text)
    return 0


def _duration(text: str) -> timedelta:
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError("use a positive number with s, m, h or d, e.g. 8h")
    return timedelta(**{units[unit]: int(number)})


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("use a port number from 0 to 65535")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError("use a positive whole number")
    return int(text)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[None]:
    """The tables bound to the database of DATABASE_URL, refused (one line) unless it is
    there and migrated; a connection lost later is reported in one line too."""
    from server.storage import engines
    from server.storage.migration_state import (
        DATABASE_UNREACHABLE,
        serving_checked,
        unreachable,
    )

    async with serving_checked(engines.create_engine(settings.database)):
        try:
            yield
        except DATABASE_UNREACHABLE as exc:
            raise unreachable(exc) from None


def _keys_status(args: argparse.Namespace) -> int:
    from server.domain.rotation import key_usage

    settings = Settings.from_env(os.environ)

    async def usage() -> dict[str, Counter[str]]:
        async with _database(settings):
            return await key_usage()

    counts = asyncio.run(usage())
    keyring = settings.keyring
    key_ids = list(keyring.key_ids) + sorted(
        {key_id for column in counts.values() for key_id in column} - set(keyring.key_ids)
    )
    print(f"{'key id':<10} {'role':<8} {'access':>8} {'refresh':>8}")
    for key_id in key_ids:
        role = (
            "active"
            if key_id == keyring.active_key_id
            else "retired"
            if key_id in keyring.key_ids
            else "unknown"
        )
        print(
            f"{key_id:<10} {role:<8} {counts['access'][key_id]:>8} {counts['refresh'][key_id]:>8}"
        )
    return 0


def _keys_rewrap(args: argparse.Namespace) -> int:
    from server.clock import utc_now
    from server.domain.rotation import RewrapReport, rewrap

    settings = Settings.from_env(os.environ)
    on_terminal = sys.stderr.isatty()

    def progress(report: RewrapReport, total: int) -> None:
        if on_terminal:
            done = report.rewrapped + report.skipped + report.failed
            width = 30
            filled = width * done // total if total else width
            bar = "#" * filled + "-" * (width - filled)
            print(f"\rrewrap [{bar}] {done}/{total} rows", end="", file=sys.stderr, flush=True)

    async def run() -> RewrapReport:
        async with _database(settings):
            return await rewrap(
                settings.keyring, now=utc_now(), batch_size=args.batch, progress=progress
            )

    report = asyncio.run(run())
    if on_terminal:
        print(file=sys.stderr)
    print(
        f"rewrapped {report.rewrapped} rows under key {settings.keyring.active_key_id} "
        f"in {report.batches} batches; {report.skipped} changed meanwhile; "
        f"{report.failed} could not be decrypted"
    )
    return 1 if report.failed else 0


def _refresh_due(args: argparse.Namespace) -> int:
    from server.clock import utc_now
    from server.domain.enums import AppType
    from server.domain.github_access import GitHubAccess
    from server.domain.locks import KeyedLocks
    from server.domain.sweep import SweepReport, sweep
    from server.github import GitHubClient, new_client_session
    from server.http.logs import configure_logging

    settings = Settings.from_env(os.environ)
    configure_logging()
    on_terminal = sys.stderr.isatty()

    def progress(report: SweepReport) -> None:
        width = 30
        filled = width * report.done // report.due if report.due else width
        bar = "#" * filled + "-" * (width - filled)
        print(f"\rrefresh [{bar}] {report.done}/{report.due}", end="", file=sys.stderr, flush=True)

    async def run() -> SweepReport:
        async with (
            _database(settings),
            new_client_session(settings.github_timeout_seconds) as session,
        ):
            client = GitHubClient(
                session,
                oauth_base_url=settings.github_oauth_base_url,
                api_base_url=settings.github_api_base_url,
            )
            return await sweep(
                now=utc_now(),
                keyring=settings.keyring,
                github_for={
                    app_type: GitHubAccess(client, settings.github_apps.get(app_type))
                    for app_type in AppType
                },
                locks=KeyedLocks(),
                within=timedelta(days=args.within),
                limit=args.limit,
                progress=progress if on_terminal else None,
            )

    report = asyncio.run(run())
    if on_terminal:
        print(file=sys.stderr)
    logging.getLogger("ghvault.sweep").info(report.summary())
    # Transient failures are retried by the next run, but a scheduler should notice them.
    return 1 if report.failed or report.unreadable else 0


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    if args.workers == 1:
        return _serve_one(host, port)
    from server.http.worker_metrics import forget_process, shared_metrics_directory
    from server.http.workers import run_workers

    with shared_metrics_directory(os.environ, settings.metrics_multiprocess_dir) as metrics:
        return run_workers(
            args.workers,
            host,
            port,
            _serve_worker,
            grace_seconds=settings.serving.shutdown_grace_seconds,
            on_exit=lambda pid: forget_process(metrics, pid),
        )


def _serve_worker(host: str, port: int) -> int:
    """One of several workers: the same server, on a port shared with the others."""
    try:
        return _serve_one(host, port, reuse_port=True)
    except ConfigError as exc:
        print(f"ghvault: configuration error: {exc}", file=sys.stderr)
        return 2


def _serve_one(host: str, port: int, *, reuse_port: bool = False) -> int:
    from server.http.app import create_app
    from server.http.logs import configure_logging
    from server.http.server import CannotListen, serve
    from server.storage.migration_state import DatabaseNotReady

    settings = Settings.from_env(os.environ)
    configure_logging()
    for warning in settings.start_up_warnings:
        logging.getLogger("ghvault.server").warning(warning)
    try:
        asyncio.run(serve(create_app(settings), host=host, port=port, reuse_port=reuse_port))
    except (CannotListen, DatabaseNotReady) as exc:
        print(f"ghvault: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(args: argparse.Namespace) -> int:
    if args.drop_data and not args.backwards:
        print("ghvault: --drop-data only goes with --backwards", file=sys.stderr)
        return 2
    database = database_from_env(os.environ)
    # Piccolo finds its configuration by import: the piccolo_conf module ships
    # beside the `server` package.
    os.environ.setdefault("PICCOLO_CONF", "piccolo_conf")
    if args.backwards:
        return _migrate_backwards(args.backwards, drop_data=args.drop_data)
    from server.storage.migrate import migrate

    report = asyncio.run(migrate(database, create=args.create))
    return _print(report.summary())


def _piccolo(args: argparse.Namespace) -> int:
    # Piccolo imports its configuration by module name after putting the working
    # directory first on sys.path, where another project's piccolo_conf.py may lie:
    # ghvault's, imported first, is the one it finds.
    os.environ["PICCOLO_CONF"] = "piccolo_conf"
    from piccolo.main import main as piccolo_main

    import piccolo_conf  # noqa: F401 -- see above

    sys.argv = ["piccolo", *args.arguments]
    piccolo_main()
    return 0


def _migrate_backwards(migration_id: str, *, drop_data: bool) -> int:
    from piccolo.apps.migrations.commands.backwards import run_backwards

    from server.storage.rollback import DROP_DATA_VARIABLE, RollbackWouldDropData

    if drop_data:
        os.environ[DROP_DATA_VARIABLE] = "yes"
    try:
        result = asyncio.run(
            run_backwards(app_name="ghvault", migration_id=migration_id, auto_agree=True)
        )
    except RollbackWouldDropData as exc:
        print(f"\nghvault: {exc}", file=sys.stderr)
        return 1
    if not result.success:
        print(f"ghvault: migration failed: {result.message}", file=sys.stderr)
        return 1
    return 0


def _dev_token(args: argparse.Namespace) -> int:
    from server.auth import mint_token
    from server.clock import utc_now

    settings = Settings.from_env(os.environ)
    if settings.jwt.secret is None:
        raise ConfigError("dev-token needs AUTH_JWT_SECRET (it cannot sign with a public key)")
    extra = {key: value for key, value in (("email", args.email), ("name", args.name)) if value}
    return _print(
        mint_token(
            settings.jwt.secret,
            sub=args.sub,
            role=Role(args.role),
            now=utc_now(),
            ttl=args.ttl,
            issuer=settings.jwt.issuer,
            audience=settings.jwt.audience,
            extra=extra,
        )
    )


def _dev_setup(args: argparse.Namespace) -> int:
    if DEV_ENV_FILE.exists():
        print(f"{DEV_ENV_FILE} exists; keeping it")
        return 0
    DEV_ENV_FILE.touch(mode=0o600)
    DEV_ENV_FILE.write_text(
        "# Development secrets for ghvault, generated by `ghvault dev-setup`. Never commit.\n"
        f"USER_GH_APP_TOKEN_ENCRYPTION_KEY={generate_key()}\n"
        f"AUTH_JWT_SECRET={secrets.token_urlsafe(48)}\n"
        "GHVAULT_ENV=development\n"
    )
    print(f"wrote development secrets to {DEV_ENV_FILE}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from server.storage.backup import BackupError, backup_sqlite

    database = database_from_env(os.environ)
    if database.sqlite_path is None:
        print(
            "ghvault: backup copies SQLite databases; on PostgreSQL use pg_dump (README: Backups)",
            file=sys.stderr,
        )
        return 1
    try:
        report = backup_sqlite(database.sqlite_path, args.path)
    except BackupError as exc:
        print(f"ghvault: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {database.sqlite_path} to {args.path} ({report.size_bytes} bytes)")
    return 0


def _export_schema(args: argparse.Namespace) -> int:
    from server.graphql.schema import export_sdl

    sys.stdout.write(export_sdl())
    return 0


if __name__ == "__main__":
    sys.exit(main())
