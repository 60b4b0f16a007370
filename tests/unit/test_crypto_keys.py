"""Keys a process does not have, and unbound ciphertexts in the table.

A ciphertext under a key id this process has not configured is a configuration problem (a key
deploy under way), raised as UnknownKeyError; only a ciphertext that fails authentication
under a configured key is tampering (DecryptionError). With REFUSE_UNBOUND_CIPHERTEXTS, a
seed-format ciphertext read from the table is refused: it could have been copied from any row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from stream_app import crypto
from stream_app.crypto import TokenBinding, TokenCipher, UnknownKeyError, generate_key, key_id
from stream_app.errors import DecryptionError
from stream_app.settings import load_settings

USER = uuid.UUID("5b3d0a52-8a0e-4d55-9b5f-0f6f1a7c2e11")
REFRESH = TokenBinding(USER, "spotify", "refresh_token")
SECRET = "sbx_rt_key_deploy_secret_value"


class Row:
    """What decrypt_column reads of a connection row."""

    def __init__(self, refresh_token: str, user_id: uuid.UUID = USER, platform: str = "spotify") -> None:
        self.user_id, self.platform, self.refresh_token = user_id, platform, refresh_token


def unknown_key_count(kid: str) -> float:
    return REGISTRY.get_sample_value("token_refresh_unknown_key_total", {"key_id": kid}) or 0.0


def test_a_ciphertext_under_a_key_not_configured_is_an_unknown_key_not_tampering() -> None:
    new_key, old_key = generate_key(), generate_key()
    written_by_a_new_worker = TokenCipher(new_key, [old_key]).encrypt(SECRET, REFRESH)
    old_worker = TokenCipher(old_key)
    before = unknown_key_count(key_id(new_key))

    with pytest.raises(UnknownKeyError) as caught:
        old_worker.decrypt(written_by_a_new_worker, REFRESH)

    assert not isinstance(caught.value, DecryptionError)  # a caller of one never catches the other
    assert caught.value.key_id == key_id(new_key) and key_id(new_key) in str(caught.value)
    assert SECRET not in str(caught.value) and new_key not in str(caught.value)
    assert unknown_key_count(key_id(new_key)) == before + 1
    # Once the process has the key (as a retired one, during the deploy), the row reads.
    assert TokenCipher(old_key, [new_key]).decrypt(written_by_a_new_worker, REFRESH) == SECRET


def test_a_failure_under_a_configured_key_is_tampering() -> None:
    key = generate_key()
    cipher = TokenCipher(key)
    stored = cipher.encrypt(SECRET, REFRESH)
    flipped = stored[:-1] + ("0" if stored[-1] != "0" else "1")
    # A ciphertext made with another key that claims the configured key's id.
    forged = f"v2:{key_id(key)}:" + TokenCipher(generate_key()).encrypt(SECRET, REFRESH).split(":", 2)[2]
    for tampered in (flipped, forged):
        with pytest.raises(DecryptionError) as caught:
            cipher.decrypt(tampered, REFRESH)
        assert not isinstance(caught.value, UnknownKeyError)


@pytest.mark.parametrize("kid", ["ABCD1234", "abcd123", "ya29.not-a-key-id", ""])
def test_a_key_id_that_is_not_one_is_malformed_and_never_echoed_as_one(kid: str) -> None:
    cipher = TokenCipher(generate_key())
    stored = f"v2:{kid}:" + cipher.encrypt(SECRET, REFRESH).split(":", 2)[2]
    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(stored, REFRESH)
    assert kid == "" or kid not in str(caught.value)


def test_unknown_key_ids_met_in_the_table_are_reported_for_readiness() -> None:
    new_key, old_key = generate_key(), generate_key()
    row = Row(TokenCipher(new_key).encrypt(SECRET, REFRESH))
    now = [1000.0]
    old_worker = TokenCipher(old_key, clock=lambda: now[0])
    assert old_worker.unknown_key_ids() == []

    with pytest.raises(UnknownKeyError):
        old_worker.decrypt_column(row, "refresh_token")

    assert old_worker.unknown_key_ids() == [key_id(new_key)]
    now[0] += crypto.UNKNOWN_KEY_MEMORY_SECONDS + 1  # not met again since: the deploy is over
    assert old_worker.unknown_key_ids() == []


@pytest.fixture
def fresh_labels() -> Iterator[None]:
    """The metric's key-id labels as a fresh process has them, and as they were after."""
    kept = set(crypto._labelled_key_ids)
    crypto._labelled_key_ids.clear()
    yield
    crypto._labelled_key_ids.clear()
    crypto._labelled_key_ids.update(kept)


@pytest.mark.usefixtures("fresh_labels")
def test_the_metric_names_a_bounded_number_of_key_ids() -> None:
    cipher = TokenCipher(generate_key())
    strangers = [key_id(generate_key()) for _ in range(crypto.MAX_KEY_ID_LABELS + 5)]
    others = unknown_key_count("other")
    for kid in strangers:
        with pytest.raises(UnknownKeyError):
            cipher.decrypt(f"v2:{kid}:" + cipher.encrypt(SECRET, REFRESH).split(":", 2)[2], REFRESH)
    named = strangers[: crypto.MAX_KEY_ID_LABELS]
    assert all(unknown_key_count(kid) == 1 for kid in named)
    assert all(unknown_key_count(kid) == 0 for kid in strangers[len(named) :])
    assert unknown_key_count("other") == others + 5


def test_with_refuse_unbound_a_seed_format_ciphertext_in_the_table_does_not_decrypt() -> None:
    key = generate_key()
    seed_format = TokenCipher(key).encrypt(SECRET)  # names no row: could be copied from any
    bound = TokenCipher(key).encrypt(SECRET, REFRESH)
    refusing = TokenCipher(key, refuse_unbound=True)

    with pytest.raises(DecryptionError, match="REFUSE_UNBOUND_CIPHERTEXTS") as caught:
        refusing.decrypt_column(Row(seed_format), "refresh_token")
    assert SECRET not in str(caught.value)
    assert refusing.decrypt_column(Row(bound), "refresh_token") == SECRET
    # Without the setting the seed format still reads, as the original service wrote it.
    assert TokenCipher(key).decrypt_column(Row(seed_format), "refresh_token") == SECRET
    # A producer's seed-format ciphertext is not the table's: ingest still reads it (and binds it).
    assert refusing.decrypt(seed_format, REFRESH) == SECRET


def test_the_cipher_follows_the_settings() -> None:
    key, retired = generate_key(), generate_key()
    settings = load_settings(encryption_key=key, retired_encryption_keys=retired, refuse_unbound_ciphertexts="true")
    cipher = TokenCipher.from_settings(settings)
    assert cipher.current_key_id == key_id(key)
    assert cipher.decrypt(TokenCipher(retired).encrypt(SECRET, REFRESH), REFRESH) == SECRET
    with pytest.raises(DecryptionError):
        cipher.decrypt_column(Row(TokenCipher(key).encrypt(SECRET)), "refresh_token")
    assert load_settings(encryption_key=key).refuse_unbound_ciphertexts is False
