"""Reading dead letters in tests: the sealed value, and every way a marker could be read from one."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from schemas import DeadLetter
from stream_app.sealed_letters import LetterSeal


def opened(letter: dict[str, Any] | bytes, encryption_key: str) -> bytes:
    """The record's value a dead letter (parsed, or its bytes) carries sealed."""
    raw = letter if isinstance(letter, bytes) else json.dumps(letter).encode()
    return LetterSeal(encryption_key).unseal(DeadLetter.model_validate_json(raw))


def readable_forms(*blobs: bytes | None) -> Iterator[bytes]:
    """Each blob as it is, and what anyone can read from it without a key: every string in it
    as JSON (escapes undone), each such string base64-decoded, and the blob's text decoded."""
    for blob in blobs:
        if not blob:
            continue
        yield blob
        yield blob.decode("utf-8", errors="ignore").encode()
        try:
            parsed = json.loads(blob)
        except ValueError:
            continue
        for text in _strings(parsed):
            yield text.encode("utf-8", errors="surrogatepass")
            for candidate in (text, text + "=", text + "=="):
                try:
                    yield base64.b64decode(candidate)
                except (binascii.Error, ValueError):
                    pass
                try:
                    yield base64.urlsafe_b64decode(candidate)
                except (binascii.Error, ValueError):
                    pass


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def readable_markers(markers: list[str], *blobs: bytes | None) -> list[str]:
    """The markers anyone can read from ``blobs``."""
    forms = list(readable_forms(*blobs))
    return [m for m in markers if any(m.encode() in form for form in forms)]
