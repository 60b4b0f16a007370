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
# A bounded replay prints one table, or one per this many records (a table is held until printed).
ROWS_PER_TABLE = 500


class JsonLines:
    """One JSON object per record (json.dumps escapes every control character)."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self._write = write

    def __call__(self, views: list[RecordView]) -> None:
        for view in views:
            self._write(json.dumps(view.fields, separators=(",", ":")))

    def close(self) -> None:
        pass


class Tables:
    """Rich tables: one for a bounded replay (or one per ROWS_PER_TABLE records); while
    following, one per batch of new records, as they come. Every cell is made printable and
    shown as plain text (no rich markup is interpreted), folded rather than cut."""

    def __init__(self, file: IO[str], *, each_batch: bool) -> None:
        self._file = file
        self._console = Console(file=file, soft_wrap=False)
        self._each_batch = each_batch
        self._rows: list[list[Text]] = []

    def __call__(self, views: list[RecordView]) -> None:
        for view in views:
            self._rows.append([*(_cell(view.fields[column]) for column in _COLUMNS), _cell(_value_of(view.fields))])
            if len(self._rows) >= ROWS_PER_TABLE:
                self.close()
        if self._each_batch:
            self.close()

    def close(self) -> None:
        """Print what is held."""
        if not self._rows:
            return
        table = Table()
        for column in _COLUMNS:
            table.add_column(column, overflow="fold")
        table.add_column("value", overflow="fold", ratio=1)
        for row in self._rows:
            table.add_row(*row)
        self._rows = []
        self._console.print(table)
        self._file.flush()


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
