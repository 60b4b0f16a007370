"""A hostile review of issue 9's fixes: inputs that still got a secret into a dead letter's
reason, the operator's redacted view, or a start-up error, and keys that passed as random.

Each test failed on the code before its fix."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from schemas import ConnectionCreated
from stream_app.crypto import generate_key
from stream_app.errors import ConfigurationError
from stream_app.ingest import InvalidEvent, parse_event
from stream_app.redacted_view import redacted_view
from stream_app.setting_rules import key_weakness
from stream_app.settings import load_settings

# A token of the shape `platform` accepts (lower case, digits, 32 characters at most): hex
# tokens of that length are common (e.g. 32-hex access tokens).
PLATFORM_SHAPED_TOKEN = "a3f9c2e8b1d47f60e5c9a2b8d4f1e7c3"
# A UUID-shaped token: opaque OAuth servers (Spring Security OAuth2's default, among others)
# issue UUIDs as access and refresh tokens.
UUID_TOKEN = "3f0c9a52-7d1e-4b8a-9c6f-2e5d8a1b4c7f"
USER_ID = "6f1c2a3b-1111-4222-8333-444455556666"


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LOG_HASH_KEY", "RETIRED_ENCRYPTION_KEYS", "PRODUCER_SIGNING_KEYS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env


def _connection(**changes: object) -> bytes:
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "connection.created",
        "occurred_at": "2026-01-01T00:00:00Z",
        "user_id": USER_ID,
        "platform": "spotify",
        "access_token": "00" * 12 + ":" + "00" * 16 + ":00",
        "refresh_token": None,
        "token_expires_at": None,
    }
    return json.dumps(event | changes).encode()


# --- dead-letter reasons ------------------------------------------------------------------


def test_an_unknown_platform_is_not_quoted_in_the_dead_letter_reason() -> None:
    """The reason goes into the dead letter unsealed, the worker's WARNING line and `dlq show`:
    a token a producer put in `platform` was quoted whole there."""
    with pytest.raises(InvalidEvent) as refused:
        parse_event(ConnectionCreated, _connection(platform=PLATFORM_SHAPED_TOKEN))
    reason = str(refused.value)
    assert reason.startswith("platform: ")
    assert "unknown platform" in reason
    assert PLATFORM_SHAPED_TOKEN not in reason
    assert PLATFORM_SHAPED_TOKEN[:8] not in reason


# --- the redacted view of `dlq show` ------------------------------------------------------


def test_the_redacted_view_shows_envelope_values_only_at_the_top_level() -> None:
    """`user_id` and `event_id` are shown when UUID-shaped because the envelope's are ids; the
    same names nested anywhere else are a producer's own data, and a UUID there can be a token."""
    value = {
        "user_id": USER_ID,
        "credentials": {"user_id": UUID_TOKEN, "refresh_token": "x"},
        "grants": [{"event_id": UUID_TOKEN}],
    }
    view = redacted_view(json.dumps(value).encode())
    assert UUID_TOKEN not in view, view
    assert json.loads(view)["user_id"] == USER_ID  # the envelope's own id is still shown


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "passphrase",
    [
        pytest.param(b"correct horse battery staple 123", id="a-phrase"),
        pytest.param(b"My-Company-Token-Refresh-Key-26!", id="a-password"),
        pytest.param(b"7f3a9c1e5b8d2f604a6c8e0b3d5f7a91", id="hex-of-hex"),  # token_hex(16), hex again
    ],
)
def test_a_key_that_is_text_in_hex_is_refused(passphrase: bytes) -> None:
    """`echo -n "<passphrase>" | xxd -p` gives 64 hex characters with plenty of distinct bytes
    and steps: every byte printable ASCII, which 32 random bytes are with a chance of 2e-14."""
    assert len(passphrase) == 32
    assert key_weakness(passphrase.hex()) is not None
    with pytest.raises(ConfigurationError) as refused:
        load_settings(encryption_key=passphrase.hex())
    assert passphrase.hex() not in str(refused.value)


# --- secrets in start-up errors and renderings --------------------------------------------

PG_PASSWORD_TAIL = "w0rdQz81"
OTHER_SECRET = generate_key()  # test-only, new at every run


@pytest.mark.parametrize(
    "password",
    [
        pytest.param(f"p@ss:{PG_PASSWORD_TAIL}", id="at-then-colon"),  # read as a port: quoted by int()
        pytest.param(f"p@ss{PG_PASSWORD_TAIL}", id="at"),  # read as part of the host: shown by repr
    ],
)
def test_a_database_password_with_an_unencoded_at_sign_is_refused_without_quoting_it(
    password: str, encryption_key: str
) -> None:
    """A password holding '@' not percent-encoded (a common password character): SQLAlchemy
    splits the URL at the first '@', so the rest of the password became the host (shown by
    repr(settings)) or a port (quoted by the parse error at start)."""
    url = f"postgresql+asyncpg://token_refresh:{password}@db.internal:5432/token_refresh"
    with pytest.raises(ConfigurationError) as refused:
        load_settings(encryption_key=encryption_key, database_url=url)
    message = str(refused.value)
    assert message.startswith("DATABASE_URL: ")
    assert PG_PASSWORD_TAIL not in message


def test_a_signing_secret_given_without_its_key_id_is_not_quoted(encryption_key: str) -> None:
    """`PRODUCER_SIGNING_KEYS=<openssl rand -hex 32>` (the id forgotten): the secret was taken
    for a key id and quoted whole in the start-up error."""
    secret = generate_key()  # test-only, new at every run
    for value in (secret, f"producer-1:{OTHER_SECRET},{secret}"):
        with pytest.raises(ConfigurationError) as refused:
            load_settings(encryption_key=encryption_key, producer_signing_keys=value)
        message = str(refused.value)
        assert message.startswith("PRODUCER_SIGNING_KEYS: ")
        assert secret[:16] not in message, message


# --- bound ciphertexts written through the Python API ---------------------------------------


def test_the_api_binds_a_ciphertext_to_the_user_id_whatever_its_spelling(
    monkeypatch: pytest.MonkeyPatch, encryption_key: str
) -> None:
    """A product holding user ids as .NET or SQL Server print them (upper case) encrypted a
    token the service then refused as failing authentication (it binds the canonical form),
    while schemas.encrypt_bound_token accepted the same spelling."""
    from stream_app import api
    from stream_app.crypto import TokenBinding, TokenCipher

    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    api._environment_crypto.cache_clear()
    try:
        for spelling in (USER_ID.upper(), USER_ID.replace("-", ""), f"urn:uuid:{USER_ID}"):
            sealed = api.encrypt_token("rt-1", user_id=spelling, platform="spotify", field="refresh_token")
            binding = TokenBinding(uuid.UUID(USER_ID), "spotify", "refresh_token")
            assert TokenCipher(encryption_key).decrypt(sealed, binding) == "rt-1"
            assert api.decrypt_token(sealed, user_id=spelling, platform="spotify", field="refresh_token") == "rt-1"
    finally:
        api._environment_crypto.cache_clear()


@pytest.mark.parametrize("secret", ["0123456789abcdef" * 2, "abcdefghij" * 4])
def test_a_repeated_pattern_is_not_a_signing_secret(secret: str, encryption_key: str) -> None:
    """PRODUCER_SIGNING_KEYS took any 32 characters with 10 distinct ones: the very patterns the
    encryption key's rule refuses ("0123456789abcdef" repeated) signed events."""
    with pytest.raises(ConfigurationError) as refused:
        load_settings(encryption_key=encryption_key, producer_signing_keys=f"producer-1:{secret}")
    assert str(refused.value).startswith("PRODUCER_SIGNING_KEYS: entry 1: ")
    assert secret not in str(refused.value)
