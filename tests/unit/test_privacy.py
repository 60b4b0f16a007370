"""Log privacy: keyed user-id hashes, and provider text scrubbed of secrets."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable

import pytest

from stream_app.crypto import generate_key
from stream_app.privacy import UserIdHasher, sanitize_provider_text

USER = uuid.UUID("3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b")
OTHER_USER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def test_hash_is_8_lower_hex(encryption_key: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{8}", UserIdHasher(encryption_key)(USER))


def test_hash_is_stable_for_one_key(encryption_key: str) -> None:
    """Across instances (so across restarts) one user's log lines can be followed."""
    assert UserIdHasher(encryption_key)(USER) == UserIdHasher(encryption_key)(USER)


def test_hash_of_uuid_and_of_its_text_agree(encryption_key: str) -> None:
    hasher = UserIdHasher(encryption_key)

    assert hasher(USER) == hasher(str(USER))


def test_hash_differs_across_keys() -> None:
    hashes = {UserIdHasher(generate_key())(USER) for _ in range(5)}

    assert len(hashes) == 5


def test_hash_differs_across_users(encryption_key: str) -> None:
    hasher = UserIdHasher(encryption_key)

    assert hasher(USER) != hasher(OTHER_USER)


@pytest.mark.parametrize(
    "digest",
    [
        lambda text: hashlib.sha256(text.encode()).hexdigest(),
        lambda text: hashlib.sha1(text.encode()).hexdigest(),
        lambda text: hashlib.md5(text.encode()).hexdigest(),
    ],
    ids=["sha256", "sha1", "md5"],
)
def test_hash_is_not_a_plain_digest_of_the_id(encryption_key: str, digest: Callable[[str], str]) -> None:
    hashed = UserIdHasher(encryption_key)(USER)

    assert hashed != digest(str(USER))[:8]
    assert hashed not in str(USER).replace("-", "")


def test_hash_does_not_use_the_raw_encryption_key() -> None:
    key = generate_key()
    hashed = UserIdHasher(key)(USER)

    assert hashed != hmac.new(bytes.fromhex(key), str(USER).encode(), hashlib.sha256).hexdigest()[:8]


# --- sanitize_provider_text ---------------------------------------------------------------

SECRET = "sbx_rt_refresh-token-value-0123"
CLIENT_SECRET = "client-secret-value-4567"


def test_secrets_are_removed_everywhere() -> None:
    text = f"token {SECRET} was sent with {CLIENT_SECRET}; again: {SECRET}"

    cleaned = sanitize_provider_text(text, (SECRET, CLIENT_SECRET))

    assert SECRET not in cleaned and CLIENT_SECRET not in cleaned
    assert cleaned == "token [redacted] was sent with [redacted]; again: [redacted]"


def test_empty_and_none_like_secrets_are_ignored() -> None:
    assert sanitize_provider_text("invalid_grant: revoked", ("", "")) == "invalid_grant: revoked"


def test_whitespace_is_collapsed_to_one_line() -> None:
    text = "  invalid_grant:\n\tRefresh   token\r\nrevoked  "

    assert sanitize_provider_text(text, ()) == "invalid_grant: Refresh token revoked"


def test_long_text_is_truncated() -> None:
    cleaned = sanitize_provider_text("e" * 1000, ())

    assert cleaned == "e" * 200 + "..."


def test_text_at_the_limit_is_kept_whole() -> None:
    assert sanitize_provider_text("e" * 200, ()) == "e" * 200


def test_secret_straddling_the_limit_does_not_leak_a_prefix() -> None:
    """Redaction happens before truncation: no part of the secret survives the cut."""
    text = "x" * 190 + SECRET + " trailing"

    cleaned = sanitize_provider_text(text, (SECRET,))

    assert SECRET[:8] not in cleaned
    assert "[redacted]" in cleaned
    assert len(cleaned) <= 203


def test_html_page_becomes_a_short_single_line() -> None:
    page = "<html>\n<head><title>403 Forbidden</title></head>\n<body>\n" + "<p>blocked</p>\n" * 100 + "</body></html>"

    cleaned = sanitize_provider_text(page, ())

    assert "\n" not in cleaned
    assert cleaned.startswith("<html> <head><title>403 Forbidden</title></head>")
    assert len(cleaned) == 203


def test_log_hashes_survive_a_key_rotation_when_log_hash_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_app.settings import load_settings

    monkeypatch.setenv("LOG_HASH_KEY", generate_key())
    before = load_settings(encryption_key=generate_key())
    after = load_settings(encryption_key=generate_key(), retired_encryption_keys=before.encryption_key)
    assert UserIdHasher(before.log_hash_secret())(USER) == UserIdHasher(after.log_hash_secret())(USER)
    monkeypatch.delenv("LOG_HASH_KEY")
    unset = load_settings(encryption_key=before.encryption_key)
    assert unset.log_hash_secret() == before.encryption_key.get_secret_value()
