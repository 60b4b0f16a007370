"""The Slack channel's settings, routing and Block Kit formatting (no network: the sends are
tested against a Slack-like receiver in tests/integration/test_notify_slack_webhook.py)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from stream_app.notify.channel import Route
from stream_app.notify.notice import Notice, NoticeKind
from stream_app.notify.slack import SlackChannel, SlackSettings, blocks, build_channel
from stream_app.privacy import UserIdHasher

WEBHOOK = "https://hooks.slack.com/services/T0UNIT/B0UNIT/unitsecret5e4d3c2b1a"
NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_slack_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in (
        "WEBHOOK_URL",
        "ALLOW_HTTP",
        "DIGEST_MINUTES",
        "TIMEOUT_SECONDS",
        "DASHBOARD_URL",
        "MENTION",
        "USER_HASH_KEY",
    ):
        monkeypatch.delenv(f"NOTIFY_SLACK_{name}", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env


def notice(kind: NoticeKind, at: datetime = NOW, **event: Any) -> Notice:
    user_id = None if kind.startswith("circuit") else uuid.uuid4()
    return Notice(uuid.uuid4(), kind, "spotify", user_id, at, event)


# -- settings -------------------------------------------------------------------------------


async def test_the_channel_is_off_until_its_webhook_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_channel(database_url="sqlite+aiosqlite:///x.db") is None
    monkeypatch.setenv("NOTIFY_SLACK_WEBHOOK_URL", "  ")
    assert build_channel(database_url="sqlite+aiosqlite:///x.db") is None

    monkeypatch.setenv("NOTIFY_SLACK_WEBHOOK_URL", WEBHOOK)
    channel = build_channel(database_url="sqlite+aiosqlite:///x.db")
    assert isinstance(channel, SlackChannel)
    assert (channel.name, channel.user_facing, channel.digest_window_seconds) == ("slack", False, 3600)
    await channel.aclose()


def test_defaults_and_a_digest_window_in_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = SlackSettings()
    assert (defaults.webhook_url, defaults.digest_minutes, defaults.timeout_seconds) == (None, 60, 10)
    assert (defaults.dashboard_url, defaults.mention, defaults.user_hash_key) == (None, None, None)
    monkeypatch.setenv("NOTIFY_SLACK_DIGEST_MINUTES", "15")
    assert SlackSettings().digest_window_seconds == 900


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NOTIFY_SLACK_DIGEST_MINUTES", "0"),
        ("NOTIFY_SLACK_TIMEOUT_SECONDS", "-1"),
        ("NOTIFY_SLACK_MENTION", "@here"),
        ("NOTIFY_SLACK_MENTION", "<https://evil.example|here>"),
        ("NOTIFY_SLACK_DASHBOARD_URL", "javascript:alert(1)"),
        ("NOTIFY_SLACK_WEBHOOK_URL", "ftp://hooks.slack.com/services/T0UNIT/B0UNIT/unitsecret5e4d3c2b1a"),
        ("NOTIFY_SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0UNIT/B0UNIT/unitsecret5e4d3c2b1a"),
        ("NOTIFY_SLACK_WEBHOOK_URL", "http://hooks.slack.com/services/T0UNIT/B0UNIT/unitsecret5e4d3c2b1a"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable_not_its_value(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        SlackSettings()
    [error] = caught.value.errors()
    assert error["loc"] == (variable.removeprefix("NOTIFY_SLACK_").lower(),)
    assert "unitsecret5e4d3c2b1a" not in str(caught.value)


def test_http_only_to_a_loopback_address_or_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]:9/hook"):
        assert SlackSettings(webhook_url=url).webhook_url is not None
    monkeypatch.setenv("NOTIFY_SLACK_ALLOW_HTTP", "true")
    monkeypatch.setenv("NOTIFY_SLACK_WEBHOOK_URL", "http://slack-sink:8080/hook")
    assert SlackSettings().webhook_url is not None


def test_the_webhook_url_is_a_secret() -> None:
    settings = SlackSettings(webhook_url=WEBHOOK, user_hash_key="k")
    assert "unitsecret5e4d3c2b1a" not in repr(settings) and "unitsecret5e4d3c2b1a" not in str(settings.model_dump())


def test_mentions_slack_markup_only() -> None:
    for mention in ("<!here>", "<!channel>", "<!subteam^S0123ABC>", "<@U0123ABC>"):
        assert SlackSettings(mention=mention).mention == mention


# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "event", "route"),
    [
        ("refresh_failed", {"will_retry": False}, Route.NOW),
        ("refresh_failed", {"will_retry": True}, Route.SKIP),
        ("refresh_failed", {}, Route.SKIP),
        ("circuit_opened", {}, Route.NOW),
        ("circuit_closed", {}, Route.NOW),
        ("needs_reauth", {}, Route.DIGEST),
        ("recovered", {}, Route.DIGEST),
        ("refreshed", {}, Route.SKIP),
        ("revoked", {}, Route.SKIP),
    ],
)
async def test_routes(kind: NoticeKind, event: dict[str, Any], route: Route) -> None:
    channel = SlackChannel(SlackSettings(webhook_url=WEBHOOK))
    try:
        assert channel.route(notice(kind, **event)) is route
    finally:
        await channel.aclose()


async def test_a_circuit_change_of_one_worker_among_others_is_not_posted() -> None:
    """Circuits are per worker: a platform's outage is posted when its first worker opens and when
    its last one closes, not once per worker."""
    channel = SlackChannel(SlackSettings(webhook_url=WEBHOOK))
    try:
        for kind in ("circuit_opened", "circuit_closed"):
            assert channel.route(replace(notice(kind), platform_wide=False)) is Route.SKIP
    finally:
        await channel.aclose()


# -- formatting -----------------------------------------------------------------------------


def test_the_connection_reference_is_the_services_log_hash_or_a_prefix() -> None:
    user_id = uuid.uuid4()
    assert blocks.user_reference("a log hash key")(user_id) == UserIdHasher("a log hash key")(user_id)
    assert blocks.user_reference(None)(user_id) == user_id.hex[:8]
    assert blocks.user_reference(None)(None) == "-"


def test_escaping_and_truncation_never_leave_half_an_entity() -> None:
    assert blocks.escape("<!here> & <@U1>\n") == "&lt;!here&gt; &amp; &lt;@U1&gt; "
    escaped = blocks.escape("&" * 100)
    for limit in range(2, 60):
        cut = blocks.truncate(escaped, limit)
        assert len(cut) <= limit and (cut.endswith("&amp;…") or cut == "…")


def test_durations() -> None:
    assert [blocks.duration(s) for s in (30, 2.5, 120, 45 * 60, 5400, 7200)] == [
        "30 s",
        "2.5 s",
        "2 min",
        "45 min",
        "1.5 h",
        "2 h",
    ]


def test_a_digest_says_since_when_if_some_notices_are_older_than_the_window() -> None:
    kwargs: dict[str, Any] = {"now": NOW, "user_ref": blocks.user_reference(None), "dashboard_url": None}
    fresh = [notice("needs_reauth", NOW - timedelta(minutes=10), reason="invalid_grant")]
    old = [notice("needs_reauth", NOW - timedelta(hours=3), reason="invalid_grant")]
    assert blocks.digest("spotify", fresh, window_seconds=900, **kwargs)["text"] == (  # type: ignore[index]
        "1 Spotify connection needs re-auth in the last 15 minutes"
    )
    assert blocks.digest("spotify", old, window_seconds=3600, **kwargs)["text"] == (  # type: ignore[index]
        "1 Spotify connection needs re-auth since 2026-11-30 19:00 UTC"
    )
    assert blocks.digest("spotify", [notice("refreshed")], window_seconds=3600, **kwargs) is None
    naive = [notice("needs_reauth", (NOW - timedelta(hours=2)).replace(tzinfo=None), reason="invalid_grant")]
    assert blocks.digest("spotify", naive, window_seconds=3600, **kwargs)["text"] == (  # type: ignore[index]
        "1 Spotify connection needs re-auth since 2026-11-30 20:00 UTC"
    )


def test_a_connection_counts_once_in_a_digest_with_its_latest_reason() -> None:
    user_id = uuid.uuid4()
    first = Notice(uuid.uuid4(), "needs_reauth", "spotify", user_id, NOW - timedelta(minutes=9), {"reason": "a"})
    second = Notice(uuid.uuid4(), "needs_reauth", "spotify", user_id, NOW - timedelta(minutes=1), {"reason": "b"})
    payload = blocks.digest(
        "spotify",
        [first, second],
        window_seconds=3600,
        now=NOW,
        user_ref=blocks.user_reference(None),
        dashboard_url=None,
    )
    assert payload is not None
    assert payload["text"] == "1 Spotify connection needs re-auth in the last hour"
    assert "*By reason*\n• b: 1" in [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]


def test_a_message_keeps_to_fifty_blocks_and_keeps_its_button() -> None:
    many = [blocks.section(f"line {i}") for i in range(80)]
    payload = blocks.message("x" * 5000, many, "https://ops.example.test/")
    assert len(payload["blocks"]) == 50
    assert payload["blocks"][-1]["type"] == "actions"
    assert payload["blocks"][-2]["elements"][0]["text"] == "… 32 more blocks not shown"
    assert len(payload["text"]) <= 3000


def test_long_texts_are_cut_to_slacks_limits() -> None:
    assert len(blocks.section("x" * 5000, fields=["y" * 3000] * 12)["text"]["text"]) == 3000
    section = blocks.section("x", fields=["y" * 3000] * 12)
    assert len(section["fields"]) == 10 and all(len(f["text"]) == 2000 for f in section["fields"])
    assert len(blocks.header("z" * 400)["text"]["text"]) == 150
