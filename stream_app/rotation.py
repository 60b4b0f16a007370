"""Re-encrypting every stored token under the current key (``token-refresh rotate-keys``).

Batches walk the table by id; each batch is a short transaction of compare-and-swap updates
(a row a refresh rewrote meanwhile already holds current-key ciphertexts and is left alone),
so refreshes are never blocked for long. Rows in the seed's format are bound to their row and
column on the way. Rerunning resumes: only rows still needing a rotation are touched.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from stream_app.crypto import TokenCipher, TokenField
from stream_app.db import ConnectionRow, Database
from stream_app.errors import DecryptionError

log = logging.getLogger(__name__)

_FIELDS: tuple[TokenField, ...] = ("access_token", "refresh_token")


@dataclass
class RotationReport:
    rotated: int = 0
    changed_meanwhile: int = 0
    unreadable: int = 0
    remaining: int = 0


def _needs_rotation(cipher: TokenCipher) -> ColumnElement[bool]:
    current = f"v2:{cipher.current_key_id}:%"
    return or_(
        *(
            (getattr(ConnectionRow, field).is_not(None)) & (getattr(ConnectionRow, field).not_like(current))
            for field in _FIELDS
        )
    )


async def count_needing_rotation(database: Database, cipher: TokenCipher) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(select(func.count()).where(_needs_rotation(cipher))) or 0)


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
                values = _reencrypted(cipher, row)
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
    log.info(
        "Key rotation: %d rotated, %d changed meanwhile, %d unreadable, %d remaining",
        report.rotated,
        report.changed_meanwhile,
        report.unreadable,
        report.remaining,
    )
    return report


def _reencrypted(cipher: TokenCipher, row: ConnectionRow) -> dict[str, str] | None:
    values: dict[str, str] = {}
    for field in _FIELDS:
        if getattr(row, field) is None:
            continue
        try:
            values[field] = cipher.encrypt_column(row, field, cipher.decrypt_column(row, field))
        except DecryptionError:
            return None
    return values
