"""What `migrate --adopt` accepts as the Node service's table, and what it refuses (one line)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stream_app.db.adoption import SEED_COLUMNS, TableColumn, TableShape, refusal


def seed_shape(**changes: object) -> TableShape:
    shape = TableShape(
        columns=[
            TableColumn(name, data_type, name not in ("id", "user_id", "platform"), False)
            for name, data_type in SEED_COLUMNS.items()
        ],
        primary_key=["id"],
        unique_sets=[frozenset({"user_id", "platform"})],
        service_tables=[],
    )
    return replace(shape, **changes)  # type: ignore[arg-type]


def with_column(column: TableColumn) -> TableShape:
    return seed_shape(columns=[*seed_shape().columns, column])


def test_the_seeds_table_is_adopted() -> None:
    assert refusal(seed_shape()) is None


def test_columns_of_its_own_that_do_not_block_inserts_are_kept() -> None:
    assert refusal(with_column(TableColumn("notes", "jsonb", nullable=True, has_default=False))) is None
    assert refusal(with_column(TableColumn("tenant", "text", nullable=False, has_default=True))) is None


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (with_column(TableColumn("refresh_due_at", "timestamp without time zone", True, False)), "refresh_due_at"),
        (seed_shape(service_tables=["outbox_events"]), "outbox_events"),
        (
            seed_shape(columns=[c for c in seed_shape().columns if c.name != "refresh_token"]),
            "no column refresh_token",
        ),
        (
            seed_shape(
                columns=[
                    replace(c, data_type="timestamp with time zone") if c.name == "token_expires_at" else c
                    for c in seed_shape().columns
                ]
            ),
            "token_expires_at is timestamp with time zone, not timestamp without time zone",
        ),
        (with_column(TableColumn("tenant", "text", nullable=False, has_default=False)), "tenant is NOT NULL"),
        (seed_shape(unique_sets=[]), "no UNIQUE (user_id, platform)"),
        (seed_shape(primary_key=["user_id", "platform"]), "primary key is not (id)"),
    ],
    ids=["service-column", "service-table", "missing-column", "timestamptz", "not-null-column", "no-unique", "pk"],
)
def test_other_shapes_are_refused_in_one_line(shape: TableShape, expected: str) -> None:
    why = refusal(shape)
    assert why is not None and expected in why and "\n" not in why
    assert "nothing was changed" in why
