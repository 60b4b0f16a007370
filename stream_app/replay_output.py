"""How ``token-refresh replay`` prints record views: JSON lines, or rich tables for a terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stream_app.redacted_view import printable
from stream_app.replay_view import RecordView

_COLUMNS = ("topic", "partition", "offset", "timestamp", "key")


def json_lines(write: Callable[[str], object]) -> Callable[[list[RecordView]], None]:
    """One JSON object per record (json.dumps escapes every control character)."""

    def emit(views: list[RecordView]) -> None:
        for view in views:
            write(json.dumps(view.fields, separators=(",", ":")))

    return emit


def tables(file: IO[str]) -> Callable[[list[RecordView]], None]:
    """A table per batch of records (a follow prints them as they come), each cell made printable
    and shown as plain text (no rich markup is interpreted)."""
    console = Console(file=file, soft_wrap=False)

    def emit(views: list[RecordView]) -> None:
        table = Table()
        for column in _COLUMNS:
            table.add_column(column, overflow="fold")  # an audit shows every character, wrapped
        table.add_column("value", overflow="fold", ratio=1)
        for view in views:
            cells = [_cell(view.fields[column]) for column in _COLUMNS]
            table.add_row(*cells, _cell(_value_of(view.fields)))
        console.print(table)
        file.flush()

    return emit


def _value_of(fields: dict[str, Any]) -> Any:
    if fields.get("value") is not None:
        return fields["value"]
    if "dead_letter" in fields:
        return fields["dead_letter"]
    return f"{fields['redacted']} ({fields['problem']})" if fields.get("problem") else fields["redacted"]


def _cell(value: Any) -> Text:
    if value is None:
        return Text("")
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return Text(printable(text))
