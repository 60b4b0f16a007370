"""The producer helpers of ``schemas`` and the Node snippets of docs/security.md agree with the
service: signatures over the documented canonical form, and row-bound (v2) ciphertexts."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from typing import Any

import pytest

from schemas import canonical_bytes, encrypt_bound_token, sign_event
from stream_app.crypto import TokenBinding, TokenCipher, generate_key
from stream_app.errors import DecryptionError
from tests.support.node_snippets import run_node

SECRET = generate_key()  # a test-only signing secret, new at every run
# Keys out of order, nesting, every kind of string escape, non-ASCII and astral characters.
EVENT: dict[str, Any] = {
    "user_id": "0b7e2f0e-8a51-4a36-9a43-2b1c8f6c9d11",
    "event_type": "connection.created",
    "schema_version": 1,
    "scopes": ["b", 'a "quoted" \\ back/slash', "tab\tnew\nline\u0001", "é", "😀", "\u2028"],
    "nested": {"z": [1, -2, 9007199254740991, None, True, False], "a": {"ä": "x", "A": "", "_": []}},
    "access_token": "00" * 12 + ":" + "11" * 16 + ":abcd",
}


def _independent_canonical(event: dict[str, Any]) -> bytes:
    # The documented form, written without schemas.signing: Python's own sorted, compact JSON
    # (its key order is JavaScript's for keys within the BMP, as these are).
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_node_signature_is_the_python_helpers_and_the_documented_algorithm() -> None:
    signed = run_node(
        ["sign-event"],
        "console.log(JSON.stringify(signEvent(input.event, input.keyId, input.secret)));",
        {"event": EVENT, "keyId": "producer-1", "secret": SECRET},
    )
    value = signed["value"].encode("utf-8")
    expected = hmac.new(SECRET.encode(), _independent_canonical(EVENT), hashlib.sha256).hexdigest()

    assert value == _independent_canonical(EVENT)  # Node sends the canonical form itself
    assert signed["headers"] == {"signature-key-id": "producer-1", "signature": expected}
    assert dict(sign_event(EVENT, "producer-1", SECRET)) == {
        "signature-key-id": b"producer-1",
        "signature": expected.encode(),
    }
    # Whatever JSON formatting travels, the service's canonical form is the same.
    assert canonical_bytes(json.dumps(EVENT, indent=2).encode()) == value
    assert canonical_bytes(value) == value


@pytest.mark.parametrize("bad", [1.5, 1e3, 2**53, float("nan")])
def test_numbers_without_a_canonical_form_cannot_be_signed(bad: float) -> None:
    with pytest.raises(ValueError, match="canonical form"):
        canonical_bytes({"schema_version": bad})


def test_node_bound_ciphertexts_decrypt_in_the_service_and_only_in_their_row() -> None:
    key = generate_key()
    user_id = uuid.uuid4()
    tokens = run_node(
        ["encrypt-bound-token"],
        "console.log(JSON.stringify(['access_token', 'refresh_token'].map("
        "(f) => encryptBoundToken(input.plain, input.key, input.user, 'spotify', f))));",
        {"plain": "ya29.é-token", "key": key, "user": str(user_id).upper()},  # case does not matter
    )
    cipher = TokenCipher(key)
    access, refresh = tokens
    assert access.startswith(f"v2:{cipher.current_key_id}:")
    assert cipher.decrypt(access, TokenBinding(user_id, "spotify", "access_token")) == "ya29.é-token"
    assert cipher.decrypt(refresh, TokenBinding(user_id, "spotify", "refresh_token")) == "ya29.é-token"
    for elsewhere in (
        TokenBinding(uuid.uuid4(), "spotify", "access_token"),
        TokenBinding(user_id, "twitch", "access_token"),
        TokenBinding(user_id, "spotify", "refresh_token"),
    ):
        with pytest.raises(DecryptionError):
            cipher.decrypt(access, elsewhere)


def test_the_python_helper_writes_what_the_service_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    user_id = uuid.uuid4()
    monkeypatch.setattr(os, "urandom", lambda size: bytes(range(7, 7 + size)))  # the same IV for both
    binding = TokenBinding(user_id, "discord", "refresh_token")
    ours = encrypt_bound_token("rt-😀", key, str(user_id).upper(), "discord", "refresh_token")
    assert ours == TokenCipher(key).encrypt("rt-😀", binding)
    monkeypatch.undo()
    assert (
        TokenCipher(key).decrypt(encrypt_bound_token("rt", key, user_id, "discord", "refresh_token"), binding) == "rt"
    )
