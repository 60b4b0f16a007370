"""A producer's ciphertext under a key id this worker lacks is a key deploy that has not
reached it: the event is refused naming the key id and saying it can be replayed, not as a
token that fails authentication."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from schemas import ConnectionCreated
from stream_app.crypto import TokenCipher, generate_key, key_id
from stream_app.ingest import InvalidEvent, bound_tokens


def _connection(access_token: str, user_id: uuid.UUID | None = None) -> ConnectionCreated:
    return ConnectionCreated(
        user_id=user_id or uuid.uuid4(),
        platform="spotify",
        access_token=access_token,
        refresh_token=None,
        token_expires_at=None,
    )


def test_a_token_under_a_key_id_not_configured_names_the_key_and_is_replayable() -> None:
    new_key = generate_key()
    user_id = uuid.uuid4()
    row = SimpleNamespace(user_id=user_id, platform="spotify")
    event = _connection(TokenCipher(new_key).encrypt_column(row, "access_token", "sbx_at_x"), user_id)
    with pytest.raises(
        InvalidEvent, match=rf"^access_token: .*{key_id(new_key)}.*replay it once that key is configured"
    ):
        bound_tokens(TokenCipher(generate_key()), event)


def test_a_token_failing_authentication_under_a_known_key_is_not_called_a_missing_key() -> None:
    cipher = TokenCipher(generate_key())
    tampered = cipher.encrypt("sbx_at_x")[:-2] + "00"
    with pytest.raises(InvalidEvent, match=r"^access_token: not a valid ciphertext") as refused:
        bound_tokens(cipher, _connection(tampered))
    assert "replay it once" not in str(refused.value)
