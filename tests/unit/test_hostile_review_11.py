"""Hostile review of issue 11 (the notifier): poison values for the intake, garbage Retry-After
headers, lone surrogates from events and lookups reaching the channels, quiet hours across a DST
change, bad settings. Each failed on the code reviewed; the core's were fixed by the core's engineer
(773cb3b, 2b73a5c), the channels' with these tests.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, time
from typing import Any

import pytest

from stream_app.notify.channel import retry_after_seconds
from stream_app.notify.channels import load_channels
from stream_app.notify.email.addresses import InvalidAddress, parse_address
from stream_app.notify.email.message import build_message
from stream_app.notify.email.templates import Templates
from stream_app.notify.intake import Malformed, read_record
from stream_app.notify.notice import Notice
from stream_app.notify.policy import QuietHours
from stream_app.notify.settings import NotifyConfigurationError, load_notify_settings
from stream_app.notify.slack import blocks

SECRET = "ya29.a0AfH6SMBx-secret-access-token-do-not-leak"


def _event(**fields: Any) -> bytes:
    base = {
        "event_id": str(uuid.uuid4()),
        "event_type": "token.needs_reauth",
        "occurred_at": "2026-11-30T12:00:00Z",
        "user_id": str(uuid.uuid4()),
        "platform": "spotify",
        "reason": "invalid_grant",
    }
    base.update(fields)
    return json.dumps(base).encode()


# -- intake: poison values ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"[" * 100_000, b'{"a":' * 50_000])
def test_a_deeply_nested_value_is_malformed(value: bytes) -> None:
    with pytest.raises(Malformed):
        read_record("token.needs_reauth", value)


def test_a_reason_never_quotes_the_record() -> None:
    with pytest.raises(Malformed) as raised:
        read_record("connection.created", _event(event_type=SECRET))
    assert SECRET not in str(raised.value)


def test_reasons_of_other_malformed_records_quote_no_value() -> None:
    """Sound: pydantic's messages are asked without their input; a token in a typed field is not quoted."""
    for value in (
        _event(user_id=SECRET),
        _event(platform=SECRET),
        _event(occurred_at=SECRET),
        _event(event_type=SECRET),
        _event(schema_version=SECRET),
        json.dumps([SECRET]).encode(),
        SECRET.encode(),
    ):
        with pytest.raises(Malformed) as raised:
            read_record("token.needs_reauth", value)
        assert "a0AfH6SMBx" not in str(raised.value)


def test_a_token_in_an_unexpected_field_is_not_kept() -> None:
    """Sound: the events ignore unknown fields, so the notice (stored, sent) never holds them."""
    received = read_record("token.needs_reauth", _event(access_token=SECRET, refresh_token=SECRET))
    assert SECRET not in json.dumps(dict(received.notice.event))


# -- Retry-After -------------------------------------------------------------------------------


def test_a_retry_after_of_unicode_digits_is_ignored() -> None:
    """float('²') raised ValueError inside a channel's http_failure: retried as a channel bug."""
    assert retry_after_seconds("²") is None


@pytest.mark.parametrize("header", ["1e9", "-5", "soon", "", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_other_garbage_retry_afters_are_ignored(header: str) -> None:
    """Sound: not delay-seconds, or a date in the past: no wait beyond the backoff."""
    assert retry_after_seconds(header) in (None, 0.0)


# -- lone surrogates: valid JSON ("\ud800"), valid for the events' str fields ---------------------


def _notice(kind: str, **event: Any) -> Notice:
    return Notice(uuid.uuid4(), kind, "spotify", uuid.uuid4(), datetime.now(UTC), event)  # type: ignore[arg-type]


def test_an_event_with_a_lone_surrogate_reaches_the_intake() -> None:
    """What the attack rests on: the schemas accept it, so a channel meets it."""
    received = read_record("token.needs_reauth", _event(reason="invalid_grant\ud800"))
    assert received.notice.event["reason"] == "invalid_grant\ud800"


def test_a_slack_payload_with_a_lone_surrogate_can_be_sent() -> None:
    """httpx encodes JSON as UTF-8: a lone surrogate raised UnicodeEncodeError, every attempt of the
    platform's whole digest failed until the give-up age dead-lettered all its notices."""
    payloads = [
        blocks.digest(
            "spotify",
            [_notice("needs_reauth", reason="invalid_grant\ud800"), _notice("needs_reauth", reason="x\udfff")],
            window_seconds=3600,
            now=datetime.now(UTC),
            user_ref=blocks.user_reference(None),
            dashboard_url=None,
        ),
        blocks.refresh_failed(
            _notice("refresh_failed", will_retry=False, error_class="Boom\ud800", status="err\udc00or"),
            user_ref=blocks.user_reference(None),
            mention=None,
            dashboard_url=None,
        ),
        blocks.circuit_changed(_notice("circuit_opened", worker="host\ud83d:1"), mention=None, dashboard_url=None),
    ]
    for payload in payloads:
        encoded = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        assert b"invalid_grant" in encoded or b"Boom" in encoded or b"host" in encoded


def test_an_email_to_a_name_or_address_with_a_lone_surrogate_is_built_or_refused() -> None:
    """A lookup's JSON may hold "\\ud800": the message could not be built (UnicodeEncodeError, retried
    as a channel bug until the give-up age) instead of being sent or refused for good."""
    sender = parse_address("noreply@example.org")
    rendered = Templates().render("needs_reauth", "spotify", occurred_at=datetime.now(UTC))
    recipient = parse_address("bob@example.com", "Bob \ud800 Smith")
    message = build_message(rendered, notice_id=uuid.uuid4(), sender=sender, recipient=recipient)
    assert b"bob@example.com" in message.as_bytes()
    for address in ("bob@exa\ud800mple.com", "Bob \udc00 <bob@example.com>"):
        try:
            recipient = parse_address(address)
        except InvalidAddress:
            continue
        build_message(rendered, notice_id=uuid.uuid4(), sender=sender, recipient=recipient).as_bytes()


def test_an_override_template_quoting_a_reason_with_a_lone_surrogate_renders_sendable_text(tmp_path: Any) -> None:
    (tmp_path / "default.needs_reauth.txt").write_text("Reason: {{ reason }}\n")
    rendered = Templates(tmp_path).render("needs_reauth", "spotify", occurred_at=datetime.now(UTC), reason="x\ud800")
    rendered.text.encode("utf-8")


# -- quiet hours across midnight and DST -------------------------------------------------------


def test_quiet_hours_across_midnight_end_at_local_time_on_dst_days() -> None:
    """Sound: 22:00-07:00 Europe/Paris ends at 07:00 local on the nights DST starts and ends."""
    quiet = QuietHours(time(22), time(7), zone="Europe/Paris")
    # 2026-03-29: clocks go 02:00 -> 03:00 (CET -> CEST); 2026-10-25: 03:00 -> 02:00.
    assert quiet.end_if_quiet(datetime(2026, 3, 28, 22, 30, tzinfo=UTC)) == datetime(2026, 3, 29, 5, tzinfo=UTC)
    assert quiet.end_if_quiet(datetime(2026, 10, 24, 21, 30, tzinfo=UTC)) == datetime(2026, 10, 25, 6, tzinfo=UTC)
    assert quiet.end_if_quiet(datetime(2026, 10, 25, 1, 30, tzinfo=UTC)) == datetime(2026, 10, 25, 6, tzinfo=UTC)
    assert quiet.end_if_quiet(datetime(2026, 10, 25, 6, 0, tzinfo=UTC)) is None
    assert quiet.end_if_quiet(datetime(2026, 3, 29, 4, 59, tzinfo=UTC)) == datetime(2026, 3, 29, 5, tzinfo=UTC)
    assert quiet.end_if_quiet(datetime(2026, 3, 29, 5, 0, tzinfo=UTC)) is None


def test_quiet_hours_ending_in_the_spring_forward_gap_still_end() -> None:
    """Sound: 01:00-02:30 Europe/Paris on 2026-03-29 (02:30 does not exist): the span still ends."""
    quiet = QuietHours(time(1), time(2, 30), zone="Europe/Paris")
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET
    end = quiet.end_if_quiet(start)
    assert end is not None and start < end <= datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["postgres//alice:S3CRETPW@db/x", "postgresql://alice:S3CRETPW@db/x", "mysql://alice:S3CRETPW@db/x"]
)
def test_a_bad_database_url_is_one_line_naming_it(url: str) -> None:
    with pytest.raises(NotifyConfigurationError) as raised:
        load_notify_settings(database_url=url)
    assert str(raised.value).startswith("DATABASE_URL") and "S3CRETPW" not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["mysql://alice:S3CRETPW@db/x", "mysql+aiomysql://alice:S3CRETPW@db/x", "foo://alice:S3CRETPW@db/x"]
)
def test_a_lookup_database_url_without_an_installed_async_driver_is_one_line_naming_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It stopped start-up with a traceback (ModuleNotFoundError from the lookup's engine)."""
    for name, value in {
        "NOTIFY_EMAIL_SMTP_HOST": "smtp.example.com",
        "NOTIFY_EMAIL_FROM": "noreply@example.com",
        "NOTIFY_EMAIL_LOOKUP_SQL": "SELECT email FROM users WHERE id = :user_id",
        "NOTIFY_EMAIL_LOOKUP_DATABASE_URL": url,
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NotifyConfigurationError) as raised:
        load_channels(database_url="sqlite+aiosqlite:///./notify.db", packages=("email",))
    message = str(raised.value)
    assert message.startswith("NOTIFY_EMAIL_LOOKUP_DATABASE_URL: ") and "\n" not in message
    assert "S3CRETPW" not in message


@pytest.mark.parametrize(
    "values",
    [
        {"notify_lease_seconds": "inf", "notify_send_timeout_seconds": "inf"},
        {"notify_retry_max_seconds": "inf"},
    ],
)
def test_an_infinite_duration_is_refused_at_start(values: dict[str, str]) -> None:
    with pytest.raises(NotifyConfigurationError):
        load_notify_settings(**values)


def test_a_digest_of_five_thousand_re_auths_is_one_bounded_message() -> None:
    """Sound: counts, not lists: 5,000 connections with 5,000 different reasons make one message
    within Slack's limits (50 blocks, 3,000 characters a section), naming five users at most."""
    notices = [_notice("needs_reauth", reason=f"reason_{index}_" + "x" * 300) for index in range(5_000)]
    payload = blocks.digest(
        "spotify",
        notices,
        window_seconds=3600,
        now=datetime.now(UTC),
        user_ref=blocks.user_reference(None),
        dashboard_url=None,
    )
    assert payload is not None
    assert payload["text"].startswith("5000 Spotify connections need re-auth")
    assert len(payload["blocks"]) <= 50
    assert len(json.dumps(payload)) < 10_000
    assert sum(notice.user_id.hex[:8] in json.dumps(payload) for notice in notices) <= 5  # type: ignore[union-attr]
