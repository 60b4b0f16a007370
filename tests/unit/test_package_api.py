"""`stream_app` offers the seed's API by name, and loads it only when used: the command line
starts without importing the engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

import stream_app


@pytest.mark.parametrize("name", stream_app.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(stream_app, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        stream_app.nothing_here  # noqa: B018


def test_the_command_line_starts_without_the_engine() -> None:
    heavy = ("stream_app.engine", "stream_app.service", "stream_app.api", "faust")
    probe = f"import sys, stream_app.cli; print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
