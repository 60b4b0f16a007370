"""No plain-text token in the run's logs: every token-shaped string in them, and which of
those the sandbox actually issued."""

from __future__ import annotations

import re
from pathlib import Path

from stream_app.sandbox.state import ACCESS_PREFIX, REFRESH_PREFIX

TOKEN_SHAPE = re.compile(rf"(?:{ACCESS_PREFIX}|{REFRESH_PREFIX})[A-Za-z0-9_-]{{20,}}")


def token_strings_in(paths: list[Path], issued: set[str]) -> tuple[int, int]:
    """(token-shaped strings, of which issued tokens) found in ``paths``."""
    shaped = issued_found = 0
    for path in paths:
        for match in TOKEN_SHAPE.findall(path.read_text(errors="replace")):
            shaped += 1
            issued_found += match in issued
    return shaped, issued_found
