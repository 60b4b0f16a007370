"""The email channel's settings: off unless NOTIFY_EMAIL_SMTP_HOST is set, and then complete
and consistent, or start-up stops with a line naming the variable (and no secret)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_app.notify.channel import Route
from stream_app.notify.email import EmailChannel, EmailSettings, build_channel
from stream_app.notify.email.lookup import Recipient
from stream_app.notify.email.settings import async_database_url
from stream_app.notify.email.templates import Templates
from stream_app.notify.notice import Notice

DATABASE_URL = "sqlite+aiosqlite:///:memory:"
PASSWORD = "smtp-pw-9f8e7d6c5b4a"
BEARER = "lookup-bearer-1a2b3c4d5e6f"
BASE = {
    "NOTIFY_EMAIL_SMTP_HOST": "smtp.example.com",
    "NOTIFY_EMAIL_FROM": "Token Service <noreply@example.com>",
    "NOTIFY_EMAIL_LOOKUP_SQL": "SELECT email FROM users WHERE id = :user_id",
}


@pytest.fixture(autouse=True)
def _no_email_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("NOTIFY_EMAIL_"):
            monkeypatch.delenv(name)


def settings(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> EmailSettings:
    for name, value in {**BASE, **env}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return EmailSettings()


def problem(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(monkeypatch, **env)
    text = str(caught.value)
    assert PASSWORD not in text and BEARER not in text
    return text


def test_off_unless_the_smtp_host_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_EMAIL_FROM", "not an address")  # not even read while off
    assert build_channel(database_url=DATABASE_URL) is None


async def test_on_with_the_smtp_host(monkeypatch: pytest.MonkeyPatch) -> None:
    settings(monkeypatch)
    channel = build_channel(database_url=DATABASE_URL)
    assert isinstance(channel, EmailChannel)
    assert (channel.name, channel.user_facing, channel.digest_window_seconds) == ("email", True, 0.0)
    await channel.aclose()


def test_routes_only_reauth_and_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = EmailChannel(settings(monkeypatch), lookup=_NoLookup(), templates=Templates())
    kinds = ("refreshed", "needs_reauth", "refresh_failed", "revoked", "recovered", "circuit_opened", "circuit_closed")
    now = datetime.now(UTC)
    routes = {
        kind: channel.route(Notice(uuid.uuid4(), kind, "spotify", uuid.uuid4(), now, {}))  # type: ignore[arg-type]
        for kind in kinds
    }
    assert routes == {kind: Route.NOW if kind in ("needs_reauth", "recovered") else Route.SKIP for kind in kinds}
    circuit = Notice(uuid.uuid4(), "needs_reauth", "spotify", None, now, {})
    assert channel.route(circuit) is Route.SKIP  # no user, nobody to write to


@pytest.mark.parametrize(
    ("security", "port"), [("starttls", 587), ("tls", 465), ("none", 25)], ids=["starttls", "tls", "none"]
)
def test_the_port_follows_the_security(monkeypatch: pytest.MonkeyPatch, security: str, port: int) -> None:
    assert settings(monkeypatch, NOTIFY_EMAIL_SMTP_SECURITY=security).port == port
    assert settings(monkeypatch, NOTIFY_EMAIL_SMTP_PORT="2525").port == 2525


def test_starttls_is_the_default_and_verification_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = settings(monkeypatch)
    assert (chosen.smtp_security, chosen.smtp_tls_verify, chosen.smtp_ca_file) == ("starttls", True, None)


def test_from_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "NOTIFY_EMAIL_FROM is required" in problem(monkeypatch, NOTIFY_EMAIL_FROM=None)


@pytest.mark.parametrize(
    "value",
    ["noreply", "noreply@", "a@b.c, d@e.f", "x <a@b.c> <d@e.f>", "no reply@example.com", "a@b.c\r\nBcc: x@y.z"],
)
def test_from_is_one_address(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert "NOTIFY_EMAIL_FROM is not one email address" in problem(monkeypatch, NOTIFY_EMAIL_FROM=value)


def test_reply_to_is_one_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "NOTIFY_EMAIL_REPLY_TO is not one" in problem(monkeypatch, NOTIFY_EMAIL_REPLY_TO="a@b.c, d@e.f")
    assert settings(monkeypatch, NOTIFY_EMAIL_REPLY_TO="Support <help@example.com>").reply_to


def test_exactly_one_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    both = problem(monkeypatch, NOTIFY_EMAIL_LOOKUP_URL="https://users.example.com/{user_id}")
    neither = problem(monkeypatch, NOTIFY_EMAIL_LOOKUP_SQL=None, NOTIFY_EMAIL_LOOKUP_URL=None)
    for text in (both, neither):
        assert "exactly one of NOTIFY_EMAIL_LOOKUP_SQL and NOTIFY_EMAIL_LOOKUP_URL" in text


@pytest.mark.parametrize(
    "sql",
    ["SELECT email FROM users", "SELECT email FROM users WHERE id = :id", "SELECT :user_id, :other"],
)
def test_the_sql_lookup_binds_user_id_only(monkeypatch: pytest.MonkeyPatch, sql: str) -> None:
    assert "exactly one bind parameter, :user_id" in problem(monkeypatch, NOTIFY_EMAIL_LOOKUP_SQL=sql)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://users.example.com/users", "must contain {user_id}"),
        ("https://users.example.com/{user_id}/{tenant}", "must contain {user_id}"),
        ("https://users.example.com/{user_id", "not a valid template"),
        ("ftp://users.example.com/{user_id}", "http(s) URL"),
    ],
)
def test_the_http_lookup_url(monkeypatch: pytest.MonkeyPatch, url: str, says: str) -> None:
    text = problem(monkeypatch, NOTIFY_EMAIL_LOOKUP_SQL=None, NOTIFY_EMAIL_LOOKUP_URL=url)
    assert "NOTIFY_EMAIL_LOOKUP_URL" in text and says in text


def test_a_bearer_token_goes_over_https_or_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = {"NOTIFY_EMAIL_LOOKUP_SQL": None, "NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN": BEARER}
    text = problem(monkeypatch, **lookup, NOTIFY_EMAIL_LOOKUP_URL="http://users.internal/{user_id}")
    assert "NOTIFY_EMAIL_LOOKUP_URL must be https:// (or a loopback address)" in text
    for url in ("https://users.internal/{user_id}", "http://127.0.0.1:8080/{user_id}", "http://localhost/{user_id}"):
        assert settings(monkeypatch, **lookup, NOTIFY_EMAIL_LOOKUP_URL=url).lookup_url == url
    unauthenticated = {"NOTIFY_EMAIL_LOOKUP_SQL": None, "NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN": None}
    assert settings(monkeypatch, **unauthenticated, NOTIFY_EMAIL_LOOKUP_URL="http://users.internal/{user_id}")


def test_the_reconnect_url_may_name_the_platform_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch, NOTIFY_EMAIL_RECONNECT_URL="https://app.example.com/connect/{platform}")
    assert settings(monkeypatch, NOTIFY_EMAIL_RECONNECT_URL="https://app.example.com/settings")
    text = problem(monkeypatch, NOTIFY_EMAIL_RECONNECT_URL="https://app.example.com/{user_id}")
    assert "NOTIFY_EMAIL_RECONNECT_URL may only contain {platform}" in text


def test_credentials_come_in_pairs_and_never_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    half = problem(monkeypatch, NOTIFY_EMAIL_SMTP_PASSWORD=PASSWORD)
    assert "set together" in half
    clear = problem(
        monkeypatch,
        NOTIFY_EMAIL_SMTP_USERNAME="mailer",
        NOTIFY_EMAIL_SMTP_PASSWORD=PASSWORD,
        NOTIFY_EMAIL_SMTP_SECURITY="none",
    )
    assert "NOTIFY_EMAIL_SMTP_SECURITY=none would send NOTIFY_EMAIL_SMTP_PASSWORD in clear" in clear


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = settings(
        monkeypatch,
        NOTIFY_EMAIL_SMTP_USERNAME="mailer",
        NOTIFY_EMAIL_SMTP_PASSWORD=PASSWORD,
        NOTIFY_EMAIL_LOOKUP_SQL=None,
        NOTIFY_EMAIL_LOOKUP_URL="https://users.example.com/{user_id}",
        NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN=BEARER,
    )
    assert PASSWORD not in repr(chosen) and BEARER not in repr(chosen)


@pytest.mark.parametrize(
    ("variable", "secret"),
    [("NOTIFY_EMAIL_SMTP_PASSWORD", PASSWORD), ("NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN", BEARER)],
)
def test_an_error_does_not_echo_a_secret(monkeypatch: pytest.MonkeyPatch, variable: str, secret: str) -> None:
    """pydantic's error text repeats the input (cut to a length: a short one whole)."""
    monkeypatch.setenv("NOTIFY_EMAIL_SMTP_HOST", "h")
    monkeypatch.setenv(variable, secret)
    with pytest.raises(ValidationError) as caught:
        EmailSettings()
    assert "NOTIFY_EMAIL_FROM is required" in str(caught.value)
    assert secret not in str(caught.value)


def test_a_ca_file_that_cannot_be_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert "cannot load CA certificates" in problem(monkeypatch, NOTIFY_EMAIL_SMTP_CA_FILE=str(tmp_path / "none.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    assert "cannot load CA certificates" in problem(monkeypatch, NOTIFY_EMAIL_SMTP_CA_FILE=str(tmp_path / "junk.pem"))


def test_a_missing_templates_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = problem(monkeypatch, NOTIFY_EMAIL_TEMPLATES_DIR=str(tmp_path / "absent"))
    assert "is not a directory" in text


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        ("spotify.needs_reauth.txt", "Hi {{ user_name }\n", "spotify.needs_reauth.txt line 1"),
        ("default.recovered.html", "{% if user_name %}unclosed\n", "default.recovered.html line"),
        ("spotify.needs_reauth.subject.txt", "Reconnect {{ dispaly_name }}", "'dispaly_name' is undefined"),
        ("default.needs_reauth.subject.txt", "{# nothing #}", "empty subject"),
    ],
)
def test_a_broken_override_stops_start_up_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, body: str, says: str
) -> None:
    (tmp_path / name).write_text(body)
    with pytest.raises(ValidationError) as caught:
        settings(monkeypatch, NOTIFY_EMAIL_TEMPLATES_DIR=str(tmp_path))
    [error] = caught.value.errors()
    assert error["msg"].startswith("Value error, NOTIFY_EMAIL_TEMPLATES_DIR: ")
    assert says in error["msg"] and "\n" not in error["msg"]


def test_a_working_override_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "spotify.needs_reauth.subject.txt").write_text("Spotify needs you, {{ user_name or 'friend' }}")
    assert settings(monkeypatch, NOTIFY_EMAIL_TEMPLATES_DIR=str(tmp_path)).templates_dir == tmp_path


def test_no_variable_takes_a_name_the_service_reserves() -> None:
    names = [
        (field.validation_alias if isinstance(field.validation_alias, str) else f"NOTIFY_EMAIL_{name}").upper()
        for name, field in EmailSettings.model_fields.items()
    ]
    assert "NOTIFY_EMAIL_FROM" in names
    assert not [n for n in names if n.endswith(("_CLIENT_ID", "_CLIENT_SECRET", "_TOKEN_URL", "_REVOCATION_URL"))]


def test_database_urls_get_an_async_driver() -> None:
    assert async_database_url("postgresql://u:p@db/app") == "postgresql+asyncpg://u:p@db/app"
    assert async_database_url("postgresql+asyncpg://u:p@db/app") == "postgresql+asyncpg://u:p@db/app"
    assert async_database_url("sqlite:///./app.db") == "sqlite+aiosqlite:///./app.db"


class _NoLookup:
    async def find(self, user_id: uuid.UUID) -> Recipient | None:
        return None

    async def aclose(self) -> None:
        return None


def test_an_empty_value_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """As compose passes `${VAR:-}`: no login as '', no templates from the working directory."""
    names = ("SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_CA_FILE")
    names += ("LOOKUP_DATABASE_URL", "LOOKUP_BEARER_TOKEN", "TEMPLATES_DIR")
    loaded = settings(monkeypatch, **{f"NOTIFY_EMAIL_{name}": "" for name in names})
    assert loaded.port == 587
    assert (loaded.smtp_username, loaded.smtp_password, loaded.smtp_ca_file) == (None, None, None)
    assert (loaded.lookup_database_url, loaded.lookup_bearer_token, loaded.templates_dir) == (None, None, None)
