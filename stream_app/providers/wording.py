"""What a provider's refusal becomes in the table, the events and the logs: its error code
(when it is a well-formed short code that quotes no secret) and a description of our own.

A provider's free text (``error_description``, Twitch's ``message``, an HTML page) goes nowhere
but a scrubbed DEBUG line: providers echo what they were sent, in any encoding.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_WELL_FORMED_CODE = re.compile(r"[a-z0-9_.-]{1,64}")

# By the code the answer is classified by (dialects.Reading.meaning).
_BY_MEANING = {
    "invalid_grant": "the provider no longer accepts this refresh token; the user must connect again",
    "access_denied": "the user withdrew the application's access; the user must connect again",
    "invalid_client": "the provider refused our client credentials",
}
# By error class, for every other code.
_BY_CLASS = {
    "invalid_client": "the provider refused our client credentials",
    "unknown_error": "the provider refused the refresh with an error code this service does not know",
}


def shown_code(code: str | None, fallback: str, sanitize: Callable[[str], str]) -> str:
    """The provider's own code, lower-cased, if it is short, well-formed and quotes no secret
    (``sanitize`` leaves it whole); else ``fallback`` (the error class)."""
    if code is None:
        return fallback
    lowered = code.lower()
    if _WELL_FORMED_CODE.fullmatch(lowered) and sanitize(lowered) == lowered:
        return lowered
    return fallback


def describe(code: str, meaning: str, error_class: str, status: int, *, how: str = "") -> str:
    """``<code>: <our description> (HTTP <status>[, <how>])``: what is stored and published."""
    words = _BY_MEANING.get(meaning) or _BY_CLASS.get(error_class) or _BY_CLASS["unknown_error"]
    return f"{code}: {words} (HTTP {status}{', ' + how if how else ''})"


def error_class_of(stored: str | None) -> str | None:
    """The code at the head of a stored ``last_sync_error`` (``describe``'s ``<code>: ...``; a
    seed-written row may hold any text: at most 64 characters of it), or None."""
    if not stored:
        return None
    return stored.split(":", 1)[0].strip()[:64] or None
