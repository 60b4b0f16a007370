"""AES-256-GCM token encryption in the seed's storage format (contract §4).

Format: ``iv:authTag:ciphertext``, each lower-case hex, key = the 32 bytes of the 64-hex
``ENCRYPTION_KEY``. Node's ``crypto.createCipheriv('aes-256-gcm', key, iv)`` writes it with
a 12- or a 16-byte IV; both read here (non-96-bit IVs go through GHASH exactly as in Node).
New ciphertexts use a 12-byte random IV.
"""

from __future__ import annotations

import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stream_app.errors import ConfigurationError, DecryptionError

_TAG_BYTES = 16
_IV_BYTES = 12
_READABLE_IV_BYTES = (12, 16)


def generate_key() -> str:
    """A new ENCRYPTION_KEY: 32 random bytes as 64 lower-case hex characters."""
    return secrets.token_hex(32)


class TokenCipher:
    """Encrypts and decrypts tokens with one key. Never puts plaintext into an error."""

    def __init__(self, key_hex: str) -> None:
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise ConfigurationError("ENCRYPTION_KEY: must be 64 hex characters") from None
        if len(key) != 32:
            raise ConfigurationError("ENCRYPTION_KEY: must be 64 hex characters")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str) -> str:
        iv = os.urandom(_IV_BYTES)
        # surrogatepass: a provider's token is stored whatever its JSON held, never dropped.
        sealed = self._aead.encrypt(iv, plaintext.encode("utf-8", "surrogatepass"), None)
        ciphertext, tag = sealed[:-_TAG_BYTES], sealed[-_TAG_BYTES:]
        return f"{iv.hex()}:{tag.hex()}:{ciphertext.hex()}"

    def decrypt(self, stored: str) -> str:
        iv, tag, ciphertext = _split(stored)
        try:
            plaintext = self._aead.decrypt(iv, ciphertext + tag, None)
        except InvalidTag:
            raise DecryptionError("ciphertext failed authentication (tampered, truncated, or another key)") from None
        try:
            return plaintext.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise DecryptionError("decrypted token is not UTF-8") from None

    def is_readable(self, stored: str) -> bool:
        try:
            self.decrypt(stored)
        except DecryptionError:
            return False
        return True


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
