"""Bound, keyed ciphertexts (v2): tied to their row and column, readable across key rotation."""

from __future__ import annotations

import re
import uuid

import pytest

from stream_app.crypto import TokenBinding, TokenCipher, UnknownKeyError, generate_key, key_id
from stream_app.errors import DecryptionError

USER = uuid.UUID("3f0c6d8e-0c4b-4f43-9a51-2b1c4c1f7d10")
REFRESH = TokenBinding(USER, "spotify", "refresh_token")
SECRET = "sbx_rt_bound_secret_value"


@pytest.fixture
def key() -> str:
    return generate_key()


def test_bound_ciphertext_names_its_key_and_reads_back_only_with_its_binding(key: str) -> None:
    cipher = TokenCipher(key)
    stored = cipher.encrypt(SECRET, REFRESH)

    assert re.fullmatch(r"v2:[0-9a-f]{8}:[0-9a-f]{24}:[0-9a-f]{32}:[0-9a-f]+", stored)
    assert stored.split(":")[1] == key_id(key) == cipher.current_key_id
    assert key not in stored and key_id(key) not in key  # the id reveals nothing of the key
    assert cipher.decrypt(stored, REFRESH) == SECRET


@pytest.mark.parametrize(
    "elsewhere",
    [
        TokenBinding(USER, "spotify", "access_token"),  # the other column of the same row
        TokenBinding(uuid.uuid4(), "spotify", "refresh_token"),  # another user's row
        TokenBinding(USER, "discord", "refresh_token"),  # the same user's other connection
    ],
    ids=["other-column", "other-user", "other-platform"],
)
def test_a_ciphertext_copied_to_another_row_or_column_does_not_decrypt(key: str, elsewhere: TokenBinding) -> None:
    cipher = TokenCipher(key)
    stored = cipher.encrypt(SECRET, REFRESH)
    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(stored, elsewhere)
    assert SECRET not in str(caught.value)


def test_a_bound_ciphertext_cannot_be_read_without_a_binding(key: str) -> None:
    cipher = TokenCipher(key)
    with pytest.raises(DecryptionError, match="row and column"):
        cipher.decrypt(cipher.encrypt(SECRET, REFRESH))


def test_retired_keys_still_read_and_only_the_current_one_writes(key: str) -> None:
    old = TokenCipher(key)
    bound_under_old, seed_under_old = old.encrypt(SECRET, REFRESH), old.encrypt(SECRET)
    new_key = generate_key()
    rotated = TokenCipher(new_key, [key])

    assert rotated.decrypt(bound_under_old, REFRESH) == SECRET
    assert rotated.decrypt(seed_under_old) == SECRET  # the seed format names no key: all are tried
    assert rotated.needs_rotation(bound_under_old) and rotated.needs_rotation(seed_under_old)
    fresh = rotated.encrypt(SECRET, REFRESH)
    assert fresh.split(":")[1] == key_id(new_key) and not rotated.needs_rotation(fresh)

    with pytest.raises(UnknownKeyError, match="not configured"):
        TokenCipher(new_key).decrypt(bound_under_old, REFRESH)  # the old key dropped too early


@pytest.mark.parametrize("stored", ["v2:", "v2:abcd1234", "v2:abcd1234:zz:yy:xx", "v2:abcd1234:00:11"])
def test_malformed_bound_ciphertexts_are_refused(key: str, stored: str) -> None:
    with pytest.raises(DecryptionError):
        TokenCipher(key).decrypt(stored, REFRESH)


def test_seed_format_ignores_the_binding(key: str) -> None:
    cipher = TokenCipher(key)
    assert cipher.decrypt(cipher.encrypt(SECRET), REFRESH) == SECRET
