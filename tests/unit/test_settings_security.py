"""Configuration traps refused at start, each with one line naming the setting and never its
value: plain-http token endpoints off this machine, weak keys, an unchecked LOG_HASH_KEY,
SASL without its credentials, and DATABASE_URL's password in any rendering of the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_app.cli import cli
from stream_app.crypto import generate_key
from stream_app.errors import ConfigurationError
from stream_app.settings import load_settings

WEAK_KEYS = [
    pytest.param("ab" * 32, id="one-byte-repeated"),
    pytest.param("0123456789abcdef" * 4, id="eight-bytes-repeated"),
    pytest.param("deadbeef" * 8, id="a-word-repeated"),
    pytest.param(bytes(range(32)).hex(), id="counting-up"),
    pytest.param(bytes(range(255, 191, -2)).hex(), id="counting-down-by-two"),
    pytest.param("0" * 63 + "1", id="almost-zero"),
]
PASSWORD = "pg-Secret-4711"
POSTGRES_URL = f"postgresql+asyncpg://token_refresh:{PASSWORD}@db.internal:5432/token_refresh"


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "LOG_HASH_KEY",
        "RETIRED_ENCRYPTION_KEYS",
        "ALLOW_INSECURE_TOKEN_URLS",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, encryption_key: str) -> str:
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    return encryption_key


def refused(*, naming: str, **overrides: object) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert message.startswith(f"{naming}: "), message
    assert "\n" not in message
    return message


# --- token URLs ---------------------------------------------------------------------------


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(
    "url",
    [
        "http://accounts.example.com/api/token",
        "http://10.0.0.7:8099/spotify/token",
        "http://sandbox:8099/spotify/token",
        "http://128.0.0.1/token",
        "http://[::2]/token",
    ],
)
def test_a_plain_http_token_url_off_this_machine_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SPOTIFY_TOKEN_URL", url)

    message = refused(naming="SPOTIFY_TOKEN_URL")

    assert "https://" in message and "ALLOW_INSECURE_TOKEN_URLS" in message


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(
    "url",
    [
        "https://accounts.spotify.com/api/token",
        "http://127.0.0.1:8099/spotify/token",
        "http://127.3.2.1/spotify/token",
        "http://localhost:8099/spotify/token",
        "http://[::1]:8099/spotify/token",
    ],
)
def test_https_and_loopback_token_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SPOTIFY_TOKEN_URL", url)

    assert load_settings().token_urls == {"spotify": url}


@pytest.mark.usefixtures("key")
def test_allow_insecure_token_urls_lets_a_test_deployment_use_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTIFY_TOKEN_URL", "http://sandbox:8099/spotify/token")
    monkeypatch.setenv("ALLOW_INSECURE_TOKEN_URLS", "true")

    assert load_settings().token_urls == {"spotify": "http://sandbox:8099/spotify/token"}


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(
    "url", ["ftp://accounts.example.com/token", "accounts.example.com/token", "https://id:secret@example.com/token"]
)
def test_a_token_url_that_is_not_a_plain_https_url_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("GOOGLE_TOKEN_URL", url)

    message = refused(naming="GOOGLE_TOKEN_URL")

    assert "id:secret" not in message


@pytest.mark.usefixtures("key")
def test_the_worker_does_not_start_with_a_plain_http_token_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_TOKEN_URL", "http://api.x.example/2/oauth2/token")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # were the check gone: no worker starts

    result = CliRunner().invoke(cli, ["worker"])

    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("token-refresh: configuration error: X_TOKEN_URL: http:// would send refresh tokens")


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("weak", WEAK_KEYS)
def test_a_key_without_entropy_is_refused_as_encryption_key(monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    monkeypatch.setenv("ENCRYPTION_KEY", weak)

    message = refused(naming="ENCRYPTION_KEY")

    assert weak not in message and "not random enough" in message and "token_hex(32)" in message


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize("weak", WEAK_KEYS)
def test_a_key_without_entropy_is_refused_as_a_retired_key(monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    monkeypatch.setenv("RETIRED_ENCRYPTION_KEYS", f"{generate_key()},{weak}")

    assert weak not in refused(naming="RETIRED_ENCRYPTION_KEYS")


def test_generated_keys_pass() -> None:
    for _ in range(300):
        load_settings(encryption_key=generate_key(), log_hash_key=generate_key())


# --- LOG_HASH_KEY -------------------------------------------------------------------------


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(
    "bad", ["a-stable-secret-for-log-hashes", "hunter2", "", "ab" * 32, "your-64-character-hex-key"]
)
def test_a_weak_or_malformed_log_hash_key_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("LOG_HASH_KEY", bad)

    message = refused(naming="LOG_HASH_KEY")

    assert bad == "" or bad not in message


@pytest.mark.usefixtures("key")
def test_a_random_log_hash_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    hash_key = generate_key()
    monkeypatch.setenv("LOG_HASH_KEY", hash_key)

    assert load_settings().log_hash_secret() == hash_key


# --- SASL ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_PASSWORD": "pw"}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_USERNAME": "svc"}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD"),
    ],
)
def test_sasl_without_its_username_and_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, protocol: str, given: dict[str, str], missing: str
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", protocol)
    for name, value in given.items():
        monkeypatch.setenv(name, value)

    message = refused(naming=missing)

    assert protocol in message


@pytest.mark.usefixtures("key")
def test_sasl_with_its_credentials_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw")

    assert load_settings().kafka_sasl_username == "svc"


# --- DATABASE_URL -------------------------------------------------------------------------


@pytest.mark.usefixtures("key")
def test_database_url_password_is_never_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", POSTGRES_URL)

    settings = load_settings()

    for rendering in (repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert PASSWORD not in rendering
    assert "db.internal" in repr(settings)  # which database is still shown
    assert settings.database_url.get_secret_value() == POSTGRES_URL


@pytest.mark.usefixtures("key")
def test_a_malformed_database_url_is_refused_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgres ql://token_refresh:{PASSWORD}@db")

    message = refused(naming="DATABASE_URL")

    assert PASSWORD not in message


# --- the HTTP API's bearer tokens and port -------------------------------------------------


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize("tokens", ["short", "a" * 40 + ",", "spaces in the middle of a long enough token!!"])
def test_a_weak_or_malformed_admin_token_is_refused_without_its_value(
    monkeypatch: pytest.MonkeyPatch, tokens: str
) -> None:
    monkeypatch.setenv("ADMIN_TOKENS", tokens)

    message = refused(naming="ADMIN_TOKENS")

    assert tokens.split(",")[0] not in message


@pytest.mark.usefixtures("key")
def test_one_token_cannot_serve_both_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = "k" * 20 + "0123456789abcdef"
    monkeypatch.setenv("ADMIN_TOKENS", f"{'a' * 40},{shared}")
    monkeypatch.setenv("TOKEN_ENDPOINT_TOKENS", shared)

    message = refused(naming="TOKEN_ENDPOINT_TOKENS")

    assert shared not in message


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(("old", "new"), [("METRICS_PORT", "HTTP_PORT"), ("METRICS_HOST", "HTTP_HOST")])
def test_a_renamed_setting_is_refused_naming_its_new_name(monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    monkeypatch.setenv(old, "9464")

    assert new in refused(naming=old)


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize("name", ["BULK_REFRESH_RATE_PER_PLATFORM", "BULK_REFRESH_CONCURRENCY"])
def test_a_bad_bulk_refresh_setting_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "0")

    refused(naming=name)
