"""Re-encrypting every stored token under the current key (``token-refresh rotate-keys``).

Batches walk the table by id; each batch is a short transaction of compare-and-swap updates
(a row a refresh rewrote meanwhile already holds current-key ciphertexts and is left alone),
so refreshes are never blocked for long. Rows in the seed's format are bound to their row and
column on the way. Rerunning resumes: only rows still needing a rotation are touched.

A row under a key id this process has not configured is not tampered with: it is counted by
key id, named in a warning, and left alone (the command then exits non-zero). The report says
how many rows still hold a seed-format (unbound) ciphertext; once none does,
REFUSE_UNBOUND_CIPHERTEXTS can be set.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from stream_app.crypto import TokenCipher, TokenField, UnknownKeyError
from stream_app.db import ConnectionRow, Database
from stream_app.errors import DecryptionError

log = logging.getLogger(__name__)

_FIELDS: tuple[TokenField, ...] = ("access_token", "refresh_token")


@dataclass
class RotationReport:
    rotated: int = 0
    changed_meanwhile: int = 0
    unreadable: int = 0  # failed authentication under a configured key (or malformed): tampering
    remaining: int = 0
    unknown_keys: Counter[str] = field(default_factory=Counter)  # rows by key id not configured
    seed_format: int = 0  # rows still holding a seed-format (unbound) ciphertext, after the run


def _needs_rotation(cipher: TokenCipher) -> ColumnElement[bool]:
    current = f"v2:{cipher.current_key_id}:%"
    return or_(
        *(
            (getattr(ConnectionRow, field).is_not(None)) & (getattr(ConnectionRow, field).not_like(current))
            for field in _FIELDS
        )
    )


def _unbound() -> ColumnElement[bool]:
    return or_(*(getattr(ConnectionRow, f).is_not(None) & getattr(ConnectionRow, f).not_like("v2:%") for f in _FIELDS))


async def count_needing_rotation(database: Database, cipher: TokenCipher) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(select(func.count()).where(_needs_rotation(cipher))) or 0)


async def count_seed_format(database: Database) -> int:
    """Rows with a token still in the seed format (unbound: it would decrypt in any row)."""
    async with database.sessions() as session:
        return int(await session.scalar(select(func.count()).where(_unbound())) or 0)


async def rotate_keys(
    database: Database,
    cipher: TokenCipher,
    *,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> RotationReport:
    report = RotationReport()
    total = await count_needing_rotation(database, cipher)
    done = 0
    if progress:
        progress(0, total)
    after = uuid.UUID(int=0)
    while True:
        async with database.transaction() as session:
            rows = (
                await session.scalars(
                    select(ConnectionRow)
                    .where(ConnectionRow.id > after, _needs_rotation(cipher))
                    .order_by(ConnectionRow.id)
                    .limit(batch_size)
                )
            ).all()
            for row in rows:
                try:
                    values = _reencrypted(cipher, row)
                except UnknownKeyError as exc:
                    report.unknown_keys[exc.key_id] += 1
                    continue
                if values is None:
                    report.unreadable += 1
                    continue
                result = await session.execute(
                    update(ConnectionRow)
                    .where(
                        ConnectionRow.id == row.id,
                        *(getattr(ConnectionRow, f).is_not_distinct_from(getattr(row, f)) for f in _FIELDS),
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    report.rotated += 1
                else:
                    report.changed_meanwhile += 1
        if not rows:
            break
        after = rows[-1].id
        done += len(rows)
        if progress:
            progress(min(done, total), total)
    report.remaining = await count_needing_rotation(database, cipher)
    report.seed_format = await count_seed_format(database)
    log.info(
        "Key rotation: %d rotated, %d changed meanwhile, %d unreadable, %d remaining",
        report.rotated,
        report.changed_meanwhile,
        report.unreadable,
        report.remaining,
    )
    _tell_operator(report, cipher)
    return report


def _tell_operator(report: RotationReport, cipher: TokenCipher) -> None:
    """What the operator must act on, at WARNING (the command logs nothing below it)."""
    for kid, rows in sorted(report.unknown_keys.items()):
        log.warning(
            "Key rotation: %d row(s) under key id %s, which is not configured here: add that key to "
            "RETIRED_ENCRYPTION_KEYS and run rotate-keys again",
            rows,
            kid,
        )
    if report.seed_format:
        log.warning("Key rotation: %d row(s) still hold a seed-format (unbound) ciphertext", report.seed_format)
    elif not cipher.refuse_unbound:
        log.warning("Key rotation: no row left in the seed format; REFUSE_UNBOUND_CIPHERTEXTS=true can now be set")


def _reencrypted(cipher: TokenCipher, row: ConnectionRow) -> dict[str, str] | None:
    values: dict[str, str] = {}
    for column in _FIELDS:
        if getattr(row, column) is None:
            continue
        try:
            values[column] = cipher.encrypt_column(row, column, cipher.decrypt_column(row, column))
        except DecryptionError:  # UnknownKeyError, a configuration problem, goes to the caller
            return None
    return values
