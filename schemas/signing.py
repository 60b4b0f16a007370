"""Producer signatures of input events: HMAC-SHA256 over the event's canonical form, in headers.

A producer holding a signing key (an id the service knows, and its secret) sends two Kafka
record headers with the event:

- ``signature-key-id``: the key's id (ASCII);
- ``signature``: lower-case hex HMAC-SHA256, keyed with the secret's UTF-8 bytes, of the
  event's *canonical form*.

The canonical form of a JSON value (the record's value, parsed) is its JSON text with no
whitespace, every object's keys sorted by UTF-16 code units (JavaScript's default sort),
strings escaped as ``JSON.stringify`` escapes them (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``,
other characters below U+0020 as lower-case ``\\u00xx``, nothing else), ``true``/``false``/
``null``, integers in decimal (at most 2^53 - 1 in magnitude), encoded in UTF-8. A value
holding any other number (a fraction, an exponent) has no canonical form and cannot be signed.
Whitespace, key order and escaping in the value as sent do not matter: the service parses the
value and signs its canonical form again. The signature covers the value only (not the key,
the topic or other headers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from schemas.events import Event

KEY_ID_HEADER = "signature-key-id"
SIGNATURE_HEADER = "signature"
MAX_SAFE_INTEGER = 2**53 - 1
KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


def canonical_bytes(event: Event | bytes | str | Mapping[str, Any]) -> bytes:
    """The canonical form of an event (a model, its JSON text, or the decoded mapping).
    Raises ValueError for a value that has none."""
    if isinstance(event, Event):
        value: Any = json.loads(event.to_bytes())
    elif isinstance(event, bytes | str):
        value = json.loads(event)
    else:
        value = dict(event)
    return _canonical(value).encode("utf-8")


def signature(event: Event | bytes | str | Mapping[str, Any], secret: str | bytes) -> str:
    """The lower-case hex HMAC-SHA256 of the event's canonical form under ``secret``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, canonical_bytes(event), hashlib.sha256).hexdigest()


def sign_event(
    event: Event | bytes | str | Mapping[str, Any], key_id: str, secret: str | bytes
) -> list[tuple[str, bytes]]:
    """The headers that sign ``event`` with the producer key ``key_id`` (aiokafka's ``headers=``).
    Send the event's JSON (``event.to_bytes()`` for a model) as the record's value."""
    return [
        (KEY_ID_HEADER, key_id.encode("ascii")),
        (SIGNATURE_HEADER, signature(event, secret).encode("ascii")),
    ]


def _canonical(value: Any) -> str:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda name: name.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_string(key)}:{_canonical(value[key])}" for key in keys) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(item) for item in value) + "]"
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError("an integer beyond 2^53 - 1 has no canonical form")
        return str(value)
    raise ValueError(f"a {type(value).__name__} has no canonical form (only integers are signed numbers)")


def _string(text: str) -> str:
    # Python's escapes with ensure_ascii=False are JSON.stringify's: the short forms, \u00xx
    # (lower-case) for the other C0 characters, everything else as is.
    return json.dumps(text, ensure_ascii=False)
