"""Encrypting a token for `connection.created` as the service stores it: a row-bound (v2) ciphertext.

``v2:<key id>:<iv>:<authTag>:<ciphertext>`` (lower-case hex): AES-256-GCM under the
service's ENCRYPTION_KEY with a random 12-byte IV, the associated data
``token-refresh/v2|<user_id>|<platform>|<field>`` (user_id in lower-case hyphenated form,
field ``access_token`` or ``refresh_token``), and the key id the first 8 hex characters of
SHA-256(``token-refresh/key-id|`` + key bytes). Such a ciphertext decrypts only in the row and
column it names: copied to another user's event it is refused. This re-implements what
``stream_app.crypto`` writes (a test proves both produce the same bytes).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TokenField = Literal["access_token", "refresh_token"]
_TAG_BYTES = 16


def encrypt_bound_token(
    plaintext: str, key_hex: str, user_id: uuid.UUID | str, platform: str, field: TokenField
) -> str:
    """``plaintext`` as a v2 ciphertext bound to (``user_id``, ``platform``, ``field``)."""
    key = bytes.fromhex(key_hex)
    if len(key) != 32:
        raise ValueError("the key must be 64 hex characters (32 bytes)")
    if field not in ("access_token", "refresh_token"):
        raise ValueError("field must be access_token or refresh_token")
    key_id = hashlib.sha256(b"token-refresh/key-id|" + key).hexdigest()[:8]
    associated = f"token-refresh/v2|{uuid.UUID(str(user_id))}|{platform}|{field}".encode()
    iv = os.urandom(12)
    sealed = AESGCM(key).encrypt(iv, plaintext.encode("utf-8"), associated)
    return f"v2:{key_id}:{iv.hex()}:{sealed[-_TAG_BYTES:].hex()}:{sealed[:-_TAG_BYTES].hex()}"
