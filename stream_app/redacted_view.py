"""What an operator may see of a dead-lettered value: its shape, never a string that could be a token.

Fail closed: a string (an object's name or a value) is shown only when it has the exact shape
of an envelope field that cannot hold a secret (a UUID, a timestamp, a known platform, event
type or refresh reason) and is that field, a member of the top-level object; every other
string, whatever its name, becomes ``<N chars>`` (the same names nested deeper are a
producer's own data, and a UUID there can be a token: opaque OAuth servers issue UUIDs).
Duplicated names are shown as they came (the last one is the one a parser keeps).

Whatever is printed from a dead letter goes through ``printable`` first: a forged letter's text
must not drive the operator's terminal.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from typing import Any

from schemas.events import CONTROL_CHARACTER_PATTERN, ENCRYPTED_TOKEN_PATTERN, EVENT_TYPES, RefreshReason
from stream_app.catalog import is_known

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?")
_REASONS = frozenset(typing.get_args(RefreshReason))
_SAFE_VALUES: dict[str, Callable[[str], bool]] = {
    "event_id": lambda s: _UUID.fullmatch(s) is not None,
    "user_id": lambda s: _UUID.fullmatch(s) is not None,
    "occurred_at": lambda s: _TIMESTAMP.fullmatch(s) is not None,
    "token_expires_at": lambda s: _TIMESTAMP.fullmatch(s) is not None,
    "event_type": lambda s: s in EVENT_TYPES,
    "platform": is_known,
    "reason": lambda s: s in _REASONS,
}
_CONTROL_CHARACTER = re.compile(CONTROL_CHARACTER_PATTERN)
_KNOWN_NAMES = frozenset(name for model in EVENT_TYPES.values() for name in model.model_fields)


class _Pairs(list[tuple[str, Any]]):
    """An object's members in order, duplicates kept."""


def redacted_view(value: bytes) -> str:
    """The value as JSON with every string that could be a token replaced, or what it is when
    it is not JSON. Never raises, whatever the bytes."""
    try:
        parsed = json.loads(value, object_pairs_hook=_Pairs)
        return _render(parsed, None, top=True)
    except Exception:  # invalid JSON or UTF-8, nesting deeper than the stack, huge numbers ...
        return f"not JSON, {len(value)} bytes"


def _render(node: Any, name: str | None, *, top: bool = False) -> str:
    """``name`` is the member's name when ``node`` is a member of the top-level object."""
    if isinstance(node, _Pairs):
        members = (f"{_render_name(key)}: {_render(item, key if top else None)}" for key, item in node)
        return "{" + ", ".join(members) + "}"
    if isinstance(node, list):
        return "[" + ", ".join(_render(item, None) for item in node) + "]"
    if isinstance(node, str):
        return json.dumps(_shown(node, name))
    return json.dumps(node)  # a number, true, false or null


def _shown(text: str, name: str | None) -> str:
    safe = _SAFE_VALUES.get(name or "")
    if safe is not None and safe(text):
        return text
    if re.fullmatch(ENCRYPTED_TOKEN_PATTERN, text):
        return f"<ciphertext, {len(text)} chars>"
    return f"<{len(text)} chars>"


def _render_name(name: str) -> str:
    return json.dumps(name if name in _KNOWN_NAMES else f"<name, {len(name)} chars>")


def printable(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1: escape sequences, carriage returns)
    written as ``\\xNN``."""
    return _CONTROL_CHARACTER.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
