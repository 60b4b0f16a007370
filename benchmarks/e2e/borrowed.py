"""What the benchmark shares with the chaos harness (scripts/chaoskit: broker, sandbox, publishing
and reading topics) and with the test suite (tests/support: the worker launcher and databases of
one's own), imported as scripts/chaos.py and the tests do: with ``scripts/`` and the repository
root on the import path. They are used as they are, never changed here."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for _folder in (REPO, REPO / "scripts"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from chaoskit.infra import Kafka  # type: ignore[import-not-found]  # noqa: E402
from chaoskit.kafka import partitions_of, publish  # type: ignore[import-not-found]  # noqa: E402
from chaoskit.processes import Sandbox  # type: ignore[import-not-found]  # noqa: E402

from tests.support.databases import create_database, drop_database  # noqa: E402
from tests.support.worker import WorkerProcess  # noqa: E402

__all__ = [
    "REPO",
    "Kafka",
    "Sandbox",
    "WorkerProcess",
    "create_database",
    "drop_database",
    "partitions_of",
    "publish",
]
