"""Text from events and lookups, fit for a header, a template or a chat message."""

from __future__ import annotations

import re

# Control characters (C0, DEL, C1: a CR/LF above all), and lone surrogates: "\ud800" is valid JSON,
# so an event or a lookup may hold one, and no UTF-8 (no email, no HTTP body) can encode it.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def one_line(text: str) -> str:
    """``text`` with its unprintable characters and runs of white space made single spaces."""
    return " ".join(UNPRINTABLE.sub(" ", text).split())
