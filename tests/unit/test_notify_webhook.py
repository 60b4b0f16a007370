"""The signed webhook's request, signatures and settings, checked against the independent
Standard Webhooks implementation (the ``standardwebhooks`` package)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from schemas.events import ProviderCircuitChanged, TokenNeedsReauth
from stream_app.notify.channel import Route
from stream_app.notify.notice import Notice, NoticeKind, recovered_notice_id
from stream_app.notify.webhook import WebhookChannel, WebhookSettings, build_channel
from stream_app.notify.webhook.channel import endpoint_label
from stream_app.notify.webhook.signing import signature
from tests.support.notify_events import refreshed


def new_secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


OLD, NEW = new_secret(), new_secret()


def settings(**values: Any) -> WebhookSettings:
    values = {"url": "https://hooks.example.test/in?key=q-secret-in-query", "secrets": f"{OLD},{NEW}", **values}
    return WebhookSettings(_env_file=None, **values)


def as_json(event: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(event.model_dump_json())
    return loaded


def needs_reauth_notice(error: str = "invalid_grant: revoked") -> Notice:
    event = TokenNeedsReauth(user_id=uuid.uuid4(), platform="spotify", reason="invalid_grant", error=error)
    return Notice(event.event_id, "needs_reauth", "spotify", event.user_id, event.occurred_at, as_json(event))


async def test_every_secret_of_a_rotation_verifies_the_request() -> None:
    channel = WebhookChannel(settings())
    notice = needs_reauth_notice()
    headers, body = channel.signed_request(notice)

    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (OLD, NEW):
        assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    tampered = body.replace(b"spotify", b"spotifx")
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(tampered, headers)
    await channel.aclose()


def test_the_signature_is_the_reference_implementations() -> None:
    body = b'{"type":"token.refreshed","data":{}}'
    key = base64.b64decode(NEW.removeprefix("whsec_"))
    moment = datetime(2026, 11, 30, 22, 0, 5, tzinfo=UTC)
    expected = Webhook(NEW).sign("msg_1", moment, body.decode())
    assert signature(key, "msg_1", int(moment.timestamp()), body) == expected


async def test_the_body_is_the_event_under_its_type_and_time_as_compact_json() -> None:
    channel = WebhookChannel(settings(), clock=lambda: 1_796_078_375.9)
    notice = needs_reauth_notice(error="invalid_grant: révoqué")
    headers, body = channel.signed_request(notice)

    expected = {"type": "token.needs_reauth", "timestamp": notice.event["occurred_at"], "data": dict(notice.event)}
    assert body == json.dumps(expected, separators=(",", ":")).encode("ascii")
    assert body.isascii() and b"r\\u00e9voqu\\u00e9" in body
    assert headers["webhook-id"] == str(notice.event["event_id"])
    assert headers["webhook-timestamp"] == "1796078375"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("token-refresh-notify/")
    await channel.aclose()


async def test_a_recovered_notice_and_a_circuit_notice_have_their_types() -> None:
    channel = WebhookChannel(settings())
    event = refreshed()
    recovered = Notice(
        recovered_notice_id(event.event_id),
        "recovered",
        "spotify",
        event.user_id,
        event.occurred_at,
        as_json(event),
    )
    circuit = ProviderCircuitChanged(platform="spotify", state="open", worker="host-1:42", cool_down_seconds=30)
    opened = Notice(circuit.event_id, "circuit_opened", "spotify", None, circuit.occurred_at, as_json(circuit))

    headers, body = channel.signed_request(recovered)
    assert json.loads(body)["type"] == "connection.recovered"
    assert json.loads(body)["data"]["event_id"] == str(event.event_id)
    assert headers["webhook-id"] == str(recovered_notice_id(event.event_id))
    headers, body = channel.signed_request(opened)
    assert json.loads(body)["type"] == "provider.circuit_changed"
    assert json.loads(body)["data"]["state"] == "open"
    await channel.aclose()


async def test_a_connection_created_envelope_never_sends_its_ciphertexts() -> None:
    channel = WebhookChannel(settings())
    sealed = "00" * 12 + ":" + "11" * 16 + ":abcd"
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "connection.created",
        "occurred_at": "2026-11-30T22:00:00Z",
        "user_id": str(uuid.uuid4()),
        "platform": "spotify",
        "access_token": sealed,
        "refresh_token": sealed,
    }
    notice = Notice(
        recovered_notice_id(uuid.UUID(event["event_id"])),
        "recovered",
        "spotify",
        uuid.UUID(event["user_id"]),
        datetime(2026, 11, 30, 22, tzinfo=UTC),
        event,
    )
    _, body = channel.signed_request(notice)
    assert sealed.encode() not in body
    assert json.loads(body)["data"]["platform"] == "spotify"
    await channel.aclose()


async def test_every_kind_is_sent_now_unless_kinds_are_chosen() -> None:
    every = WebhookChannel(settings())
    chosen = WebhookChannel(settings(kinds=" needs_reauth, recovered "))
    for kind in get_args(NoticeKind):
        notice = Notice(uuid.uuid4(), kind, "spotify", None, datetime.now(UTC), {})
        assert every.route(notice) is Route.NOW
        assert chosen.route(notice) is (Route.NOW if kind in ("needs_reauth", "recovered") else Route.SKIP)
    assert every.name == "webhook" and every.user_facing is False and every.digest_window_seconds == 0
    # connection.created, which the core hands on as a "refreshed" notice, is the product's own.
    created = {"event_type": "connection.created", "platform": "spotify"}
    assert every.route(Notice(uuid.uuid4(), "refreshed", "spotify", None, datetime.now(UTC), created)) is Route.SKIP
    assert every.route(Notice(uuid.uuid4(), "recovered", "spotify", None, datetime.now(UTC), created)) is Route.NOW
    with pytest.raises(NotImplementedError):
        await every.send_digest("spotify", [])
    await every.aclose()
    await chosen.aclose()


def test_the_channel_is_off_until_its_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("NOTIFY_WEBHOOK_SECRETS", NEW)
    assert build_channel(database_url="sqlite+aiosqlite://") is None

    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://hooks.example.test/in")
    channel = build_channel(database_url="sqlite+aiosqlite://")
    assert isinstance(channel, WebhookChannel)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9000/hook")
    monkeypatch.setenv("NOTIFY_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("NOTIFY_WEBHOOK_SECRETS", f" {OLD} , {NEW},")
    monkeypatch.setenv("NOTIFY_WEBHOOK_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("NOTIFY_WEBHOOK_KINDS", "revoked")
    loaded = WebhookSettings(_env_file=None)
    assert loaded.url == "http://127.0.0.1:9000/hook"
    assert loaded.signing_keys == tuple(base64.b64decode(s.removeprefix("whsec_")) for s in (OLD, NEW))
    assert loaded.timeout_seconds == 2.5
    assert loaded.sent_kinds == {"revoked"}
    assert OLD not in repr(loaded) and "127.0.0.1" not in repr(loaded)


def test_defaults() -> None:
    defaults = WebhookSettings(_env_file=None)
    assert (defaults.url, defaults.secrets, defaults.allow_http) == (None, None, False)
    assert defaults.timeout_seconds == 10 and defaults.sent_kinds == set(get_args(NoticeKind))


UNPADDED = new_secret(30).rstrip("=")  # 30 bytes: base64 with padding, accepted without it
SHORT = new_secret(23)
LONG = new_secret(65)
NO_PREFIX = new_secret().removeprefix("whsec_")
NOT_BASE64 = "whsec_" + "*" * 40 + "q-secret-not-base64"


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"url": "http://hooks.example.test/in?key=q-secret-in-query"}, "url", "must be https://"),
        ({"url": "ftp://hooks.example.test/?key=q-secret-in-query"}, "url", "absolute https://"),
        ({"url": "https://hooks.example.test:port/?key=q-secret-in-query"}, "url", "not a URL"),
        ({"url": "/relative?key=q-secret-in-query"}, "url", "absolute https://"),
        ({"secrets": None}, "secrets", "required when NOTIFY_WEBHOOK_URL is set"),
        ({"secrets": " , "}, "secrets", "required when NOTIFY_WEBHOOK_URL is set"),
        ({"secrets": SHORT}, "secrets", "24 to 64 bytes, not 23"),
        ({"secrets": LONG}, "secrets", "24 to 64 bytes, not 65"),
        ({"secrets": NO_PREFIX}, "secrets", "must start with 'whsec_'"),
        ({"secrets": NOT_BASE64}, "secrets", "standard base64"),
        ({"secrets": f"{OLD},{OLD}"}, "secrets", "listed twice"),
        ({"secrets": ",".join(new_secret() for _ in range(5))}, "secrets", "at most 4 secrets"),
        ({"timeout_seconds": 0}, "timeout_seconds", "greater than 0"),
        ({"kinds": "needs_reauth,everything"}, "kinds", "unknown notice kinds ['everything']"),
    ],
)
def test_bad_settings_name_the_setting_and_never_echo_a_secret(
    values: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(**values)
    errors = raised.value.errors(include_url=False)
    assert [error["loc"] for error in errors] == [(field,)]
    assert message in errors[0]["msg"]
    text = str(raised.value)
    for secret in (OLD, NEW, SHORT, LONG, NO_PREFIX, NOT_BASE64, "q-secret"):
        assert secret.removeprefix("whsec_") not in text


def test_accepted_secrets() -> None:
    assert len(settings(secrets=UNPADDED).signing_keys[0]) == 30
    assert len(settings(secrets=new_secret(24)).signing_keys[0]) == 24
    assert len(settings(secrets=new_secret(64)).signing_keys) == 1
    assert len(settings(secrets=",".join(new_secret() for _ in range(4))).signing_keys) == 4
    assert settings(url=None).url is None  # secrets without a URL: the channel stays off
    assert settings(url="http://127.0.0.1:8080/hook", allow_http=True).url == "http://127.0.0.1:8080/hook"


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("https://hooks.example.test/in/q-secret-path?key=q-secret", "webhook endpoint https://hooks.example.test"),
        (
            "https://user:q-secret@hooks.example.test:8443/in#q-secret",
            "webhook endpoint https://hooks.example.test:8443",
        ),
        ("http://[::1]:9000/hook?key=q-secret", "webhook endpoint http://[::1]:9000"),
    ],
)
def test_reasons_name_the_endpoint_by_scheme_host_and_port_only(url: str, label: str) -> None:
    assert endpoint_label(url) == label
