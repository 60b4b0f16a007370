"""Configuration (contract §8): defaults, one clear line per bad setting, platform variables,
`.env` support, and no secret in any rendering of the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from stream_app.catalog import platform
from stream_app.cli import cli
from stream_app.crypto import generate_key
from stream_app.errors import ConfigurationError
from stream_app.providers.client import ProviderClient
from stream_app.settings import load_settings

SECTION_6_VARIABLES = (
    "REFRESH_BUFFER_SECONDS",
    "SCAN_INTERVAL_SECONDS",
    "REFRESH_MAX_ATTEMPTS",
    "RETRY_BASE_DELAY_SECONDS",
    "RETRY_MAX_DELAY_SECONDS",
    "RETRY_JITTER_RATIO",
    "RATE_LIMIT_DEFAULT_WAIT_SECONDS",
    "LOG_LEVEL",
    "KAFKA_SASL_PASSWORD",
)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `.env` and none of the tuned numbers come from outside the test."""
    for name in SECTION_6_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, encryption_key: str) -> str:
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    return encryption_key


def config_error(*, naming: str) -> str:
    """Load the settings expecting a failure; return its message after the shared checks."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert naming in message
    assert "\n" not in message
    return message


# --- defaults -----------------------------------------------------------------------------


@pytest.mark.usefixtures("key")
def test_defaults_are_the_contract_numbers() -> None:
    settings = load_settings()

    assert settings.refresh_buffer_seconds == 300
    assert settings.refresh_max_attempts == 3
    assert settings.retry_base_delay_seconds == 1
    assert settings.retry_max_delay_seconds == 30
    assert settings.retry_jitter_ratio == 0.3
    assert settings.rate_limit_default_wait_seconds == 60
    assert settings.log_level == "INFO"
    assert settings.scan_interval_seconds == 60
    assert settings.credentials == {}
    assert settings.token_urls == {}
    assert settings.database_url.get_secret_value().startswith("sqlite")


@pytest.mark.usefixtures("key")
def test_numbers_and_log_level_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "REFRESH_MAX_ATTEMPTS": "5",
        "RETRY_BASE_DELAY_SECONDS": "0.5",
        "RETRY_MAX_DELAY_SECONDS": "10",
        "RETRY_JITTER_RATIO": "0",
        "RATE_LIMIT_DEFAULT_WAIT_SECONDS": "15",
        "LOG_LEVEL": "debug",
    }.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert (
        settings.refresh_max_attempts,
        settings.retry_base_delay_seconds,
        settings.retry_max_delay_seconds,
    ) == (5, 0.5, 10)
    assert (
        settings.retry_jitter_ratio,
        settings.rate_limit_default_wait_seconds,
        settings.log_level,
    ) == (0, 15, "DEBUG")


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFRESH_BUFFER_SECONDS", "five minutes"),
        ("REFRESH_BUFFER_SECONDS", "-7"),
        ("REFRESH_MAX_ATTEMPTS", "-3"),
        ("RETRY_JITTER_RATIO", "1.75"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_malformed_number_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)

    message = config_error(naming=name)

    assert value not in message


# --- topic replication --------------------------------------------------------------------


@pytest.fixture
def no_replication_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("key", "no_replication_variables")
def test_topics_default_to_the_local_single_broker() -> None:
    settings = load_settings()

    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (1, None)


@pytest.mark.usefixtures("key", "no_replication_variables")
@pytest.mark.parametrize(("replicas", "in_sync"), [("3", "2"), ("3", "3"), ("1", "1")])
def test_replication_for_a_cluster_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, replicas: str, in_sync: str
) -> None:
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", replicas)
    monkeypatch.setenv("KAFKA_MIN_INSYNC_REPLICAS", in_sync)

    settings = load_settings()

    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (int(replicas), int(in_sync))


@pytest.mark.usefixtures("key", "no_replication_variables")
@pytest.mark.parametrize(("replicas", "in_sync"), [(None, "2"), ("3", "4"), ("2", "3")])
def test_more_in_sync_replicas_than_replicas_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, replicas: str | None, in_sync: str
) -> None:
    if replicas is not None:
        monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", replicas)
    monkeypatch.setenv("KAFKA_MIN_INSYNC_REPLICAS", in_sync)

    message = config_error(naming="KAFKA_MIN_INSYNC_REPLICAS")

    assert message.startswith("KAFKA_MIN_INSYNC_REPLICAS: must not exceed KAFKA_REPLICATION_FACTOR")


@pytest.mark.usefixtures("key", "no_replication_variables")
def test_the_worker_does_not_start_with_more_in_sync_replicas_than_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_MIN_INSYNC_REPLICAS", "2")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # were the check gone: no worker starts

    result = CliRunner().invoke(cli, ["worker"])

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "token-refresh: configuration error: KAFKA_MIN_INSYNC_REPLICAS: must not exceed KAFKA_REPLICATION_FACTOR: "
        "no topic has more in-sync replicas than replicas (production: 3 replicas, 2 in sync)"
    ]


# --- outbox retention ---------------------------------------------------------------------


@pytest.mark.usefixtures("key")
def test_outbox_retention_defaults_to_a_day_and_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTBOX_RETENTION_HOURS", raising=False)
    assert load_settings().outbox_retention_hours == 24

    monkeypatch.setenv("OUTBOX_RETENTION_HOURS", "1.5")
    assert load_settings().outbox_retention_hours == 1.5


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize("bad", ["0", "-6", "a day", "inf", "nan", "87601", ""])
def test_bad_outbox_retention_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("OUTBOX_RETENTION_HOURS", bad)

    message = config_error(naming="OUTBOX_RETENTION_HOURS")

    assert message.startswith("OUTBOX_RETENTION_HOURS: ")
    assert ";" not in message


@pytest.mark.usefixtures("key")
def test_late_answers_are_waited_for_within_the_lease_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LATE_ANSWER_SECONDS", "HTTP_TIMEOUT_SECONDS", "REFRESH_LEASE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings().longest_call_seconds == 110  # 10 s, then up to 120 - 2 x 10 more

    monkeypatch.setenv("LATE_ANSWER_SECONDS", "30")
    assert load_settings().longest_call_seconds == 40


@pytest.mark.usefixtures("key")
def test_a_late_answer_window_past_the_lease_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATE_ANSWER_SECONDS", "101")  # 10 + 101 > 120 - 10

    message = config_error(naming="LATE_ANSWER_SECONDS")

    assert message.startswith("LATE_ANSWER_SECONDS: ")
    assert ";" not in message


@pytest.mark.usefixtures("key")
def test_the_worker_does_not_start_with_a_zero_outbox_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_RETENTION_HOURS", "0")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # were the check gone: no worker starts

    result = CliRunner().invoke(cli, ["worker"])

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "token-refresh: configuration error: OUTBOX_RETENTION_HOURS: Input should be greater than 0"
    ]


# --- ENCRYPTION_KEY -----------------------------------------------------------------------


def test_missing_key_names_encryption_key() -> None:
    message = config_error(naming="ENCRYPTION_KEY")

    assert message.count(";") == 0  # the one problem, not a list of side effects


def _bad_keys() -> list[object]:
    good = generate_key()
    return [
        pytest.param(good[:62], id="short"),
        pytest.param(good + "ab", id="long"),
        pytest.param(good[:40] + "zz" + good[42:], id="non-hex"),
        pytest.param(good[:40] + "  " + good[42:], id="spaces"),
        pytest.param("your-64-character-hex-key", id="placeholder"),
        pytest.param("0" * 64, id="all-zeros"),
        pytest.param("f" * 64, id="all-f"),
        pytest.param("", id="empty"),
    ]


@pytest.mark.parametrize("bad", _bad_keys())
def test_bad_key_is_one_line_naming_encryption_key_without_the_value(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("ENCRYPTION_KEY", bad)

    message = config_error(naming="ENCRYPTION_KEY")

    if bad:
        assert bad not in message
        assert bad[:16] not in message


def test_upper_case_hex_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key().upper()
    monkeypatch.setenv("ENCRYPTION_KEY", key)

    assert load_settings().encryption_key.get_secret_value() == key


# --- platform credentials and token URLs --------------------------------------------------


@pytest.mark.usefixtures("key")
def test_credentials_and_token_urls_are_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "SPOTIFY_CLIENT_ID": "spotify-id",
        "SPOTIFY_CLIENT_SECRET": "spotify-secret",
        "SPOTIFY_TOKEN_URL": "http://127.0.0.1:9000/spotify/token",
        "GOOGLE_CLIENT_ID": "google-id",
        "GOOGLE_CLIENT_SECRET": "google-secret",
        "GOOGLE_TOKEN_URL": "http://127.0.0.1:9000/google/token",
        "GITHUB_APP_CLIENT_ID": "gh-app-id",
        "GITHUB_APP_CLIENT_SECRET": "gh-app-secret",
    }.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert set(settings.credentials) == {"spotify", "google", "github_app"}
    assert settings.credentials["spotify"].client_id == "spotify-id"
    assert settings.credentials["spotify"].client_secret.get_secret_value() == "spotify-secret"
    assert settings.credentials["github_app"].client_secret.get_secret_value() == "gh-app-secret"
    assert settings.token_urls == {
        "spotify": "http://127.0.0.1:9000/spotify/token",
        "google": "http://127.0.0.1:9000/google/token",
    }


@pytest.mark.usefixtures("key")
def test_google_variables_serve_all_three_google_platforms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "google-id")
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "google-secret")
    monkeypatch.setenv("GOOGLE_TOKEN_URL", "http://127.0.0.1:9000/google/token")

    settings = load_settings()
    client = ProviderClient(None, settings)  # type: ignore[arg-type]  # no request is made

    for key in ("youtube", "gmail", "google_calendar"):
        spec = platform(key)
        assert settings.credentials[spec.credential_key].client_id == "google-id"
        assert client.token_url(spec) == "http://127.0.0.1:9000/google/token"
    assert client.token_url(platform("spotify")) == "https://accounts.spotify.com/api/token"


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ("SPOTIFY_CLIENT_ID", "SPOTIFY_CLIENT_SECRET"),
        ("DISCORD_CLIENT_SECRET", "DISCORD_CLIENT_ID"),
        ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"),
    ],
)
def test_half_a_credential_pair_names_the_missing_half(
    monkeypatch: pytest.MonkeyPatch, present: str, missing: str
) -> None:
    monkeypatch.setenv(present, "value-present-1234")

    message = config_error(naming=missing)

    assert "value-present-1234" not in message


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize(
    "typo",
    ["SPOTFY_CLIENT_ID", "DISCROD_CLIENT_SECRET", "GOOGEL_TOKEN_URL", "GITHUB_APPS_CLIENT_ID", "GITHUBAPP_TOKEN_URL"],
)
def test_unknown_platform_prefix_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, typo: str) -> None:
    monkeypatch.setenv(typo, "some-value-5678")

    message = config_error(naming=typo)

    assert "some-value-5678" not in message


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize("name", ["AZURE_CLIENT_ID", "AWS_CLIENT_SECRET", "GITHUB_CLIENT_ID"])
def test_foreign_variables_of_the_same_shape_are_ignored(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "belongs-to-someone-else")

    settings = load_settings()

    assert settings.credentials == {}
    assert settings.token_urls == {}


@pytest.mark.usefixtures("key")
def test_empty_platform_variables_count_as_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", "")
    monkeypatch.setenv("SPOTIFY_TOKEN_URL", "")

    settings = load_settings()

    assert settings.credentials == {}
    assert settings.token_urls == {}


# --- .env ---------------------------------------------------------------------------------


def test_dotenv_file_is_read(tmp_path: Path, encryption_key: str) -> None:
    (tmp_path / ".env").write_text(
        f"ENCRYPTION_KEY={encryption_key}\n"
        "REFRESH_BUFFER_SECONDS=120\n"
        "SPOTIFY_CLIENT_ID=dotenv-id\n"
        "SPOTIFY_CLIENT_SECRET=dotenv-secret\n"
        "SPOTIFY_TOKEN_URL=http://127.0.0.1:9000/token\n",
        encoding="utf-8",
    )

    settings = load_settings()

    assert settings.encryption_key.get_secret_value() == encryption_key
    assert settings.refresh_buffer_seconds == 120
    assert settings.credentials["spotify"].client_id == "dotenv-id"
    assert settings.token_urls["spotify"] == "http://127.0.0.1:9000/token"


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, encryption_key: str) -> None:
    (tmp_path / ".env").write_text(
        f"ENCRYPTION_KEY={encryption_key}\nREFRESH_BUFFER_SECONDS=120\n"
        "SPOTIFY_CLIENT_ID=dotenv-id\nSPOTIFY_CLIENT_SECRET=dotenv-secret\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("REFRESH_BUFFER_SECONDS", "90")
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", "env-id")

    settings = load_settings()

    assert settings.refresh_buffer_seconds == 90
    assert settings.credentials["spotify"].client_id == "env-id"
    assert settings.credentials["spotify"].client_secret.get_secret_value() == "dotenv-secret"


def test_dotenv_typo_is_refused_too(tmp_path: Path, encryption_key: str) -> None:
    (tmp_path / ".env").write_text(f"ENCRYPTION_KEY={encryption_key}\nSPOTFY_CLIENT_ID=x\n", encoding="utf-8")

    config_error(naming="SPOTFY_CLIENT_ID")


def test_bad_key_in_dotenv_is_reported_without_its_value(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ENCRYPTION_KEY=your-64-character-hex-key\n", encoding="utf-8")

    message = config_error(naming="ENCRYPTION_KEY")

    assert "your-64-character-hex-key" not in message


# --- no secret in any rendering -----------------------------------------------------------


def test_settings_never_render_secrets(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    secrets = {
        "SPOTIFY_CLIENT_SECRET": "spotify-secret-value-0001",
        "GOOGLE_CLIENT_SECRET": "google-secret-value-0002",
        "KAFKA_SASL_PASSWORD": "kafka-password-value-0003",
    }
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", "spotify-id")
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "google-id")
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()
    renderings = {
        "repr": repr(settings),
        "str": str(settings),
        "json": settings.model_dump_json(),
        "dump": repr(settings.model_dump()),
        "credentials": repr(settings.credentials),
    }

    assert settings.credentials["spotify"].client_secret.get_secret_value() == secrets["SPOTIFY_CLIENT_SECRET"]
    for where, text in renderings.items():
        assert key not in text, where
        assert key.upper() not in text, where
        for value in secrets.values():
            assert value not in text, where


@pytest.mark.usefixtures("key")
def test_settings_are_frozen() -> None:
    settings = load_settings()

    with pytest.raises(ValidationError, match="frozen"):
        settings.refresh_buffer_seconds = 1  # type: ignore[misc]
    assert settings.refresh_buffer_seconds == 300
