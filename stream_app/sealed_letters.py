"""Sealing a dead letter's value and headers: what cannot be processed is kept for a replay, never readable.

The value is encrypted with AES-256-GCM under a dead-letter key derived from an encryption key
(HKDF-SHA256, info ``token-refresh/dead-letter/v1``), so a dead letter is never under a key that
also encrypts tokens. The letter names that key by its own id (8 hex of a hash, as for the
encryption keys), so a letter sealed under a key since retired is still opened with it. The
associated data is the record's topic, partition and offset: a sealed value copied into another
dead letter does not open. The record's headers (a producer's signature, its own headers) are
sealed the same way as a second field, under the same key, with associated data of their own
label and the same position: they open only in their own letter, and never as its value. So is
the record's key (a third label): a dead letter keeps it readable only in the service's own
shape (``readable_key``), so a producer that puts a token in a key does not leak it there.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas import DeadLetter
from stream_app.catalog import is_known
from stream_app.crypto import key_id
from stream_app.settings import Settings

_LABEL = "token-refresh/dead-letter/v1"
_HEADERS_LABEL = "token-refresh/dead-letter-headers/v1"
_KEY_LABEL = "token-refresh/dead-letter-key/v1"
_NONCE_BYTES = 12

# A Kafka record's headers as aiokafka reads and sends them: in order, names may repeat.
Headers = list[tuple[str, bytes | None]]


class UnsealError(Exception):
    """A sealed value that cannot be opened here; the message names why, never any content."""


@dataclass(frozen=True)
class SealedValue:
    key_id: str
    sealed_base64: str


def dead_letter_key(encryption_key_hex: str) -> bytes:
    """The dead-letter key derived from an encryption key (64 hex characters)."""
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=_LABEL.encode())
    return hkdf.derive(bytes.fromhex(encryption_key_hex))


def associated_data(topic: str, partition: int, offset: int) -> bytes:
    return f"{_LABEL}|{topic}|{partition}|{offset}".encode()


def headers_associated_data(topic: str, partition: int, offset: int) -> bytes:
    return f"{_HEADERS_LABEL}|{topic}|{partition}|{offset}".encode()


def key_associated_data(topic: str, partition: int, offset: int) -> bytes:
    return f"{_KEY_LABEL}|{topic}|{partition}|{offset}".encode()


def readable_key(key: bytes | str | None) -> str | None:
    """``key`` as text if it has the service's own shape ``<user_id>:<platform>`` (a canonical
    UUID, a known platform), else None: no other key is shown or kept readable."""
    if isinstance(key, bytes):
        try:
            key = key.decode("ascii")
        except UnicodeDecodeError:
            return None
    if key is None:
        return None
    user_id, _, platform = key.partition(":")
    try:
        canonical = str(uuid.UUID(user_id)) == user_id
    except ValueError:
        return None
    return key if canonical and is_known(platform) else None


class LetterSeal:
    """Seals under the dead-letter key of the current encryption key; opens under that of the
    current or any retired one."""

    def __init__(self, current_key_hex: str, retired_keys_hex: Sequence[str] = ()) -> None:
        keys = [dead_letter_key(k) for k in (current_key_hex, *retired_keys_hex)]
        self._keys = {key_id(key.hex()): AESGCM(key) for key in keys}
        self.key_id = key_id(keys[0].hex())

    @classmethod
    def from_settings(cls, settings: Settings) -> LetterSeal:
        return cls(settings.encryption_key.get_secret_value(), settings.retired_keys())

    def seal(self, value: bytes, topic: str, partition: int, offset: int) -> SealedValue:
        return SealedValue(self.key_id, self._seal(value, associated_data(topic, partition, offset)))

    def seal_headers(self, headers: Headers, topic: str, partition: int, offset: int) -> str:
        """``headers`` sealed (base64), under the same key as ``seal`` (``self.key_id``)."""
        plain = json.dumps([[name, None if v is None else base64.b64encode(v).decode()] for name, v in headers])
        return self._seal(plain.encode(), headers_associated_data(topic, partition, offset))

    def seal_key(self, key: bytes, topic: str, partition: int, offset: int) -> str:
        """The record's key sealed (base64), under the same key as ``seal`` (``self.key_id``)."""
        return self._seal(key, key_associated_data(topic, partition, offset))

    def unseal(self, letter: DeadLetter) -> bytes:
        """The value ``letter`` carries sealed; UnsealError if it carries none or it cannot be opened."""
        if not letter.sealed_value:
            raise UnsealError("no sealed value")
        ad = associated_data(letter.topic, letter.partition, letter.offset)
        return self._open(letter.sealed_key_id, letter.sealed_value, ad, "sealed value")

    def unseal_headers(self, letter: DeadLetter) -> Headers | None:
        """The headers ``letter`` carries sealed, None if it keeps none (a letter of an earlier
        version, or one without its value); UnsealError if they cannot be opened."""
        if not letter.sealed_headers:
            return None
        ad = headers_associated_data(letter.topic, letter.partition, letter.offset)
        plain = self._open(letter.sealed_key_id, letter.sealed_headers, ad, "sealed headers")
        try:
            pairs = json.loads(plain)
            return [(name, None if v is None else base64.b64decode(v, validate=True)) for name, v in pairs]
        except (ValueError, TypeError):  # authentic yet malformed: only a bug of ours writes that
            raise UnsealError("sealed headers are not a list of (name, base64 value) pairs") from None

    def unseal_key(self, letter: DeadLetter) -> bytes | None:
        """The record's key ``letter`` carries sealed, None if it carries none (the record had no
        key, or a letter of an earlier version: its key is the readable one); UnsealError if it
        cannot be opened."""
        if not letter.sealed_key:
            return None
        ad = key_associated_data(letter.topic, letter.partition, letter.offset)
        return self._open(letter.sealed_key_id, letter.sealed_key, ad, "sealed key")

    def _seal(self, plain: bytes, ad: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        return base64.b64encode(nonce + self._keys[self.key_id].encrypt(nonce, plain, ad)).decode()

    def _open(self, sealed_key_id: str | None, sealed: str, ad: bytes, what: str) -> bytes:
        if sealed_key_id is None:
            raise UnsealError(f"{what} without a key id")
        aead = self._keys.get(sealed_key_id)
        if aead is None:
            raise UnsealError(f"sealed under dead-letter key {sealed_key_id}, not one of the configured keys")
        try:
            raw = base64.b64decode(sealed, validate=True)
        except binascii.Error:
            raise UnsealError(f"{what} is not base64") from None
        try:
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], ad)
        except (InvalidTag, ValueError):
            raise UnsealError(f"{what} failed authentication (tampered, or moved from another position)") from None
