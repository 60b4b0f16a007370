"""The end-to-end benchmark's package (benchmarks/e2e), for the tests that exercise it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextmanager
def e2e_package(*modules: str) -> Iterator[ModuleType]:
    """``e2e`` with ``modules`` loaded, imported as the script imports it (``benchmarks/`` on the path)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        for module in modules:
            importlib.import_module(f"e2e.{module}")
        yield importlib.import_module("e2e")
    finally:
        sys.path.remove(str(BENCHMARKS))
