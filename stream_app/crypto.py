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

A v2 ciphertext under a key id this process has not configured raises UnknownKeyError (a
configuration problem: a key deploy under way), never DecryptionError (tampering): neither is
a subclass of the other, so a caller cannot take one for the other. With
REFUSE_UNBOUND_CIPHERTEXTS, a seed-format ciphertext read from the table is refused.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stream_app.errors import ConfigurationError, DecryptionError, TokenRefreshError
from stream_app.metrics import UNKNOWN_KEY

if TYPE_CHECKING:
    from stream_app.settings import Settings

_TAG_BYTES = 16
_IV_BYTES = 12
_READABLE_IV_BYTES = (12, 16)
_BOUND_PREFIX = "v2"
_KEY_ID = re.compile(r"[0-9a-f]{8}")
# How long a key id met in the table stays in unknown_key_ids() without being met again.
UNKNOWN_KEY_MEMORY_SECONDS = 600.0
# Key ids the metric names (a producer can send any); the rest are counted as "other".
MAX_KEY_ID_LABELS = 16
_labelled_key_ids: set[str] = set()

TokenField = Literal["access_token", "refresh_token"]


def generate_key() -> str:
    """A new ENCRYPTION_KEY: 32 random bytes as 64 lower-case hex characters."""
    return secrets.token_hex(32)


def key_id(key_hex: str) -> str:
    """A key's public name: 8 hex characters of a hash that reveals nothing of the key."""
    return hashlib.sha256(b"token-refresh/key-id|" + bytes.fromhex(key_hex)).hexdigest()[:8]


class UnknownKeyError(TokenRefreshError):
    """A ciphertext under a key id this process has not configured: a key deploy under way (or
    a key missing from ENCRYPTION_KEY / RETIRED_ENCRYPTION_KEYS), not tampering. ``key_id`` is a
    hash that names the key without revealing it."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"ciphertext under key id {key_id}, which is not configured in this process")
        self.key_id = key_id


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

    def __init__(
        self,
        current_key_hex: str,
        retired_keys_hex: Sequence[str] = (),
        *,
        refuse_unbound: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        keys = [_key_bytes(current_key_hex), *(_key_bytes(k) for k in retired_keys_hex)]
        self._keys = {key_id(key.hex()): AESGCM(key) for key in keys}
        self.current_key_id = key_id(keys[0].hex())
        self._current = self._keys[self.current_key_id]
        self.refuse_unbound = refuse_unbound
        self._clock = clock
        self._unknown_met: dict[str, float] = {}  # key id -> when a row under it was last met

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenCipher:
        return cls(
            settings.encryption_key.get_secret_value(),
            settings.retired_keys(),
            refuse_unbound=settings.refuse_unbound_ciphertexts,
        )

    def encrypt(self, plaintext: str, binding: TokenBinding | None = None) -> str:
        """Bound (v2) when a binding is given; otherwise the seed's format, under the current key."""
        iv = os.urandom(_IV_BYTES)
        aad = binding.associated_data() if binding is not None else None
        # surrogatepass: a provider's token is stored whatever its JSON held, never dropped.
        sealed = self._current.encrypt(iv, plaintext.encode("utf-8", "surrogatepass"), aad)
        seed_format = f"{iv.hex()}:{sealed[-_TAG_BYTES:].hex()}:{sealed[:-_TAG_BYTES].hex()}"
        return f"{_BOUND_PREFIX}:{self.current_key_id}:{seed_format}" if binding is not None else seed_format

    def decrypt(self, stored: str, binding: TokenBinding | None = None) -> str:
        """Raises UnknownKeyError for a v2 ciphertext under a key not configured here, and
        DecryptionError for anything malformed or failing authentication."""
        if stored.startswith(f"{_BOUND_PREFIX}:"):
            parts = stored.split(":", 2)
            if len(parts) != 3 or not _KEY_ID.fullmatch(parts[1]):
                raise DecryptionError("not in v2:keyId:iv:authTag:ciphertext form")
            _, kid, rest = parts
            sealed = _split(rest)  # malformed is malformed, whatever key it names
            aead = self._keys.get(kid)
            if aead is None:
                _count_unknown(kid)
                raise UnknownKeyError(kid)
            if binding is None:
                raise DecryptionError("a bound ciphertext needs its row and column to decrypt")
            return _open([aead], sealed, binding.associated_data())
        return _open([self._current, *(k for k in self._keys.values() if k is not self._current)], _split(stored), None)

    def decrypt_column(self, row: Any, field: TokenField) -> str:
        """The plaintext of ``row``'s ``field`` (a row, or anything with user_id and platform),
        as stored in the table: with ``refuse_unbound``, a seed-format ciphertext is refused."""
        stored = getattr(row, field)
        if stored is None:
            raise DecryptionError(f"{field} is empty")
        if self.refuse_unbound and is_unbound(stored):
            raise DecryptionError(f"{field} is unbound (seed format), refused by REFUSE_UNBOUND_CIPHERTEXTS")
        try:
            return self.decrypt(stored, TokenBinding.of(row, field))
        except UnknownKeyError as exc:
            self._unknown_met[exc.key_id] = self._clock()
            raise

    def unknown_key_ids(self) -> list[str]:
        """Key ids of stored rows this process met in the last UNKNOWN_KEY_MEMORY_SECONDS and
        could not read for want of the key (its readiness: it needs the key configured)."""
        horizon = self._clock() - UNKNOWN_KEY_MEMORY_SECONDS
        for kid in [kid for kid, met in self._unknown_met.items() if met < horizon]:
            del self._unknown_met[kid]
        return sorted(self._unknown_met)

    def encrypt_column(self, row: Any, field: TokenField, plaintext: str) -> str:
        return self.encrypt(plaintext, TokenBinding.of(row, field))

    def needs_rotation(self, stored: str | None) -> bool:
        """Whether a stored ciphertext is in the seed format or under a key that is not current."""
        return stored is not None and not stored.startswith(f"{_BOUND_PREFIX}:{self.current_key_id}:")


def is_unbound(stored: str | None) -> bool:
    """Whether a stored ciphertext is in the seed format (names no key, bound to no row)."""
    return stored is not None and not stored.startswith(f"{_BOUND_PREFIX}:")


def _count_unknown(kid: str) -> None:
    if kid not in _labelled_key_ids and len(_labelled_key_ids) < MAX_KEY_ID_LABELS:
        _labelled_key_ids.add(kid)
    UNKNOWN_KEY.labels(kid if kid in _labelled_key_ids else "other").inc()


def _key_bytes(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ConfigurationError("ENCRYPTION_KEY: must be 64 hex characters") from None
    if len(key) != 32:
        raise ConfigurationError("ENCRYPTION_KEY: must be 64 hex characters")
    return key


def _open(candidates: Sequence[AESGCM], sealed: tuple[bytes, bytes, bytes], aad: bytes | None) -> str:
    iv, tag, ciphertext = sealed
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
