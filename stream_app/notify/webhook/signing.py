"""Standard Webhooks signatures (https://www.standardwebhooks.com/): secrets and the
``webhook-signature`` header.

A secret is ``whsec_`` and the base64 of its key bytes. The signed content is
``f"{webhook-id}.{webhook-timestamp}.{body}"``; each key signs it with HMAC-SHA256 and the
header lists one ``v1,<base64>`` per key, space-separated, so that a consumer holding any one
of them (during a rotation: the old or the new) can verify the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
# The spec's advice: keys of 24 to 64 bytes.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
# Two during a rotation; a few more leave room for a slow one, not for a list of every key ever.
MAX_SECRETS = 4


def parse_secret(text: str) -> bytes:
    """The key bytes of one ``whsec_<base64>`` secret. The error never quotes the secret."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a secret must start with {SECRET_PREFIX!r}")
    encoded = text.removeprefix(SECRET_PREFIX)
    try:
        # Unpadded base64 is common (and accepted by the reference libraries).
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a secret must be {SECRET_PREFIX!r} followed by standard base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {len(key)}")
    return key


def parse_secrets(text: str) -> tuple[bytes, ...]:
    """The keys of a comma-separated list of secrets (spaces around commas allowed)."""
    keys = tuple(parse_secret(part.strip()) for part in text.split(",") if part.strip())
    if not keys:
        raise ValueError("at least one secret is required")
    if len(keys) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} secrets (the current ones of a rotation), not {len(keys)}")
    if len(set(keys)) != len(keys):
        raise ValueError("a secret is listed twice")
    return keys


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64 HMAC-SHA256>`` of the signed content."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per key, space-separated."""
    return " ".join(signature(key, msg_id, timestamp, body) for key in keys)
