"""Key rotation: which keys hold the data, and re-encryption under the active key.

Rotation: make the new key active and list the old one as retired, rewrap,
check `keys status` shows nothing under the old key, then drop it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.crypto import (
    ENVELOPE_PREFIX_LENGTH,
    DecryptionError,
    Keyring,
    envelope_prefix,
    key_id_of_prefix,
)
from server.domain import audit
from server.domain.enums import AuditAction, TokenKind
from server.domain.tokens import slot_of
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import write_transaction

DEFAULT_BATCH_SIZE = 200


async def key_usage() -> dict[str, Counter[str]]:
    """{column kind: {key id: rows}}; "malformed" for values that name no key."""
    usage: dict[str, Counter[str]] = {kind.value: Counter() for kind in TokenKind}
    for kind in TokenKind:
        name = Token.ciphertext_column(kind)._meta.db_column_name
        # Counted in the database: only the few distinct prefixes come back.
        prefix = f"substr({name}, 1, {ENVELOPE_PREFIX_LENGTH})"
        rows = await Token.raw(
            f"SELECT {prefix} AS prefix, count(*) AS n FROM {Token._meta.tablename} "  # noqa: S608 -- fixed names
            f"WHERE {name} IS NOT NULL GROUP BY {prefix}"
        )
        for row in rows:
            usage[kind.value][key_id_of_prefix(row["prefix"]) or "malformed"] += row["n"]
    return usage


@dataclass
class RewrapReport:
    rewrapped: int = 0
    skipped: int = 0  # changed by a refresh or revoke meanwhile: already current
    failed: int = 0  # would not decrypt (a key is missing, or the value is damaged)
    batches: int = 0

    def as_detail(self, keyring: Keyring) -> dict[str, Any]:
        return {
            "rewrapped": self.rewrapped,
            "skipped": self.skipped,
            "failed": self.failed,
            "batches": self.batches,
            "active_key_id": keyring.active_key_id,
        }


def _stale(keyring: Keyring) -> Any:
    """Rows with a value under any key but the active one."""
    active = envelope_prefix(keyring.active_key_id) + "%"
    access, refresh = (
        column.is_not_null() & column.not_like(active)
        for column in map(Token.ciphertext_column, TokenKind)
    )
    return access | refresh


def _rewrapped_values(row: dict[str, Any], keyring: Keyring) -> dict[Any, str]:
    values = {}
    for kind in TokenKind:
        column = Token.ciphertext_column(kind)
        value = row[column._meta.name]
        if value is not None and keyring.needs_rewrap(value):
            values[column] = keyring.rewrap(value, slot_of(row, kind))
    return values


async def rewrap(
    keyring: Keyring,
    *,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[RewrapReport, int], None] | None = None,
) -> RewrapReport:
    """Re-encrypt every value not under the active key, one transaction per batch.

    Safe to interrupt and run again, and safe beside a running server: each
    row is written only if its credential_version is still the one read, so
    a refresh or revoke in between wins (and its values are current anyway).
    """
    report = RewrapReport()
    remaining = await Token.count().where(_stale(keyring))
    after: Any = None
    while True:
        query = (
            Token.select(
                Token.id,
                Token.user_id,
                Token.github_app_type,
                Token.github_user_id,
                Token.credential_version,
                *map(Token.ciphertext_column, TokenKind),
            )
            .where(_stale(keyring))
            .order_by(Token.id)
            .limit(batch_size)
        )
        if after is not None:
            query = query.where(Token.id > after)
        rows = await query
        if not rows:
            break
        after = rows[-1]["id"]
        async with write_transaction():
            for row in rows:
                try:
                    values = _rewrapped_values(row, keyring)
                except DecryptionError:
                    report.failed += 1
                    continue
                written = (
                    await Token.update(values)
                    .where(
                        (Token.id == row["id"])
                        & (Token.credential_version == row["credential_version"])
                    )
                    .returning(Token.id)
                )
                if written:
                    report.rewrapped += 1
                else:
                    report.skipped += 1
        report.batches += 1
        if progress is not None:
            progress(report, remaining)
    async with write_transaction():
        await audit.record(
            AuditAction.KEYS_REWRAPPED, actor=None, now=now, detail=report.as_detail(keyring)
        )
    return report
