"""chaoskit's broker, database and sandbox helpers (scripts/chaoskit), imported as scripts/chaos.py
does: with ``scripts/`` on the import path. They are used as they are, never changed here."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))

from chaoskit.infra import Kafka, create_database, drop_database  # type: ignore[import-not-found]  # noqa: E402
from chaoskit.processes import Sandbox  # type: ignore[import-not-found]  # noqa: E402

__all__ = ["REPO", "Kafka", "Sandbox", "create_database", "drop_database"]
