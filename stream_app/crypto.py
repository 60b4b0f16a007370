"""AES-256-GCM token encryption (contract §4): the seed's format, and bound, keyed ciphertexts.

Two formats are read:

- the seed's ``iv:authTag:ciphertext`` (lower-case hex), as Node's ``crypto`` writes it with a
  12- or 16-byte IV (non-96-bit IVs go through GHASH exactly as in Node). It names no key, so
  every configured key is tried, the current one first;
- ``v2:<key id>:iv:authTag:ciphertext``, which this service writes to its table: the key id
  says which key encrypted it (so keys can rotate), and the ciphertext is bound to its row
  and column by associated data (user, platform, which token), so a ciphertext copied to
  another row or column does not decrypt.

Producers may send either in ``connection.created``; the service stores tokens bound.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stream_app.errors import ConfigurationError, DecryptionError

_TAG_BYTES = 16
_IV_BYTES = 12
_READABLE_IV_BYTES = (12, 16)
_BOUND_PREFIX = "v2"

TokenField = Literal["access_token", "refresh_token"]


def generate_key() -> str:
    """A new ENCRYPTION_KEY: 32 random bytes as 64 lower-case hex characters."""
    return secrets.token_hex(32)


def key_id(key_hex: str) -> str:
    """A key's public name: 8 hex characters of a hash that reveals nothing of the key."""
    return hashlib.sha256(b"token-refresh/key-id|" + bytes.fromhex(key_hex)).hexdigest()[:8]


@dataclass(frozen=True)
class TokenBinding:
    """Which row and column a ciphertext belongs to (its associated data)."""

    user_id: uuid.UUID | str
    platform: str
    field: TokenField

    @classmethod
    def of(cls, row: Any, field: TokenField) -> TokenBinding:
        return cls(row.user_id, row.platform, field)

    def associated_data(self) -> bytes:
        return f"token-refresh/{_BOUND_PREFIX}|{self.user_id}|{self.platform}|{self.field}".encode()


class TokenCipher:
    """Encrypts under the current key; decrypts under it or any retired one. Never puts
    plaintext (or a key) into an error."""

    def __init__(self, current_key_hex: str, retired_keys_hex: Sequence[str] = ()) -> None:
        keys = [_key_bytes(current_key_hex), *(_key_bytes(k) for k in retired_keys_hex)]
        self._keys = {key_id(key.hex()): AESGCM(key) for key in keys}
        self.current_key_id = key_id(keys[0].hex())
        self._current = self._keys[self.current_key_id]

    def encrypt(self, plaintext: str, binding: TokenBinding | None = None) -> str:
        """Bound (v2) when a binding is given; otherwise the seed's format, under the current key."""
        iv = os.urandom(_IV_BYTES)
        aad = binding.associated_data() if binding is not None else None
        # surrogatepass: a provider's token is stored whatever its JSON held, never dropped.
        sealed = self._current.encrypt(iv, plaintext.encode("utf-8", "surrogatepass"), aad)
        seed_format = f"{iv.hex()}:{sealed[-_TAG_BYTES:].hex()}:{sealed[:-_TAG_BYTES].hex()}"
        return f"{_BOUND_PREFIX}:{self.current_key_id}:{seed_format}" if binding is not None else seed_format

    def decrypt(self, stored: str, binding: TokenBinding | None = None) -> str:
        if stored.startswith(f"{_BOUND_PREFIX}:"):
            parts = stored.split(":", 2)
            if len(parts) != 3:
                raise DecryptionError("not in v2:keyId:iv:authTag:ciphertext form")
            _, kid, rest = parts
            aead = self._keys.get(kid)
            if aead is None:
                raise DecryptionError(f"ciphertext under key {kid!r}, which is not configured")
            if binding is None:
                raise DecryptionError("a bound ciphertext needs its row and column to decrypt")
            return _open([aead], rest, binding.associated_data())
        return _open([self._current, *(k for k in self._keys.values() if k is not self._current)], stored, None)

    def decrypt_column(self, row: Any, field: TokenField) -> str:
        """The plaintext of ``row``'s ``field`` (a row, or anything with user_id and platform)."""
        stored = getattr(row, field)
        if stored is None:
            raise DecryptionError(f"{field} is empty")
        return self.decrypt(stored, TokenBinding.of(row, field))

    def encrypt_column(self, row: Any, field: TokenField, plaintext: str) -> str:
        return self.encrypt(plaintext, TokenBinding.of(row, field))

    def needs_rotation(self, stored: str | None) -> bool:
        """Whether a stored ciphertext is in the seed format or under a key that is not current."""
        return stored is not None and not stored.startswith(f"{_BOUND_PREFIX}:{self.current_key_id}:")


def _key_bytes(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ConfigurationError("ENCRYPTION_KEY: must be 64 hex characters") from None
    if len(key) != 32:
        raise ConfigurationError("ENCRYPTION_KEY: must be 64 hex characters")
    return key


def _open(candidates: Sequence[AESGCM], stored: str, aad: bytes | None) -> str:
    iv, tag, ciphertext = _split(stored)
    for aead in candidates:
        try:
            plaintext = aead.decrypt(iv, ciphertext + tag, aad)
        except InvalidTag:
            continue
        try:
            return plaintext.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise DecryptionError("decrypted token is not UTF-8") from None
    raise DecryptionError(
        "ciphertext failed authentication (tampered, truncated, another key, or another row or column)"
    )


def _split(stored: str) -> tuple[bytes, bytes, bytes]:
    parts = stored.split(":")
    if len(parts) != 3:
        raise DecryptionError("not in iv:authTag:ciphertext form")
    try:
        iv, tag, ciphertext = (binascii.unhexlify(part) for part in parts)
    except (binascii.Error, ValueError):
        raise DecryptionError("ciphertext parts are not hex") from None
    if len(iv) not in _READABLE_IV_BYTES:
        raise DecryptionError(f"IV of {len(iv)} bytes (expected 12 or 16)")
    if len(tag) != _TAG_BYTES:
        raise DecryptionError(f"auth tag of {len(tag)} bytes (expected 16)")
    return iv, tag, ciphertext
