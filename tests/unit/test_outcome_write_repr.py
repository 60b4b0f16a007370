"""An outcome waiting in a batch holds the plain-text refresh token it replaces: its text must
never show it (a log line, a traceback, a debugger's or error reporter's dump of a batch)."""

from __future__ import annotations

import uuid
from typing import Any

from stream_app.db import ConnectionRow
from stream_app.engine.lease import Lease
from stream_app.engine.outcomes import _Write

SPENT = "plain-refresh-token-4f1c"


def test_an_outcome_in_a_batch_never_shows_the_refresh_token_it_spent() -> None:
    database: Any = None
    row = ConnectionRow(id=uuid.uuid4(), user_id=uuid.uuid4(), platform="discord", version=3)
    write = _Write(row, Lease(database, row.id, "host:1:abcd", 30.0), {"status": "connected"}, None, SPENT)

    for text in (repr(write), str(write), repr([write]), f"{write}"):
        assert SPENT not in text
    assert write.spent == SPENT  # still there for the fenced store
