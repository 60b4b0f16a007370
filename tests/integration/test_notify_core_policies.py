"""The notifier's policies and recovered notices on the real broker and Postgres: quiet hours delay
(never drop), one re-auth notice per connection per interval, recovered notices from the channels
that announced a problem, pending problems dropped, digests at most once per window."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from schemas import ConnectionCreated, ProviderCircuitChanged, TokenRevoked
from stream_app.notify.channel import DeliveryFailed, Route
from stream_app.notify.notice import Notice, recovered_notice_id
from tests.integration.test_notify_core import (
    Clock,
    RecordingChannel,
    Setup,
    assert_no_secret,
    eventually,
    eventually_async,
    metric,
    notify_database_url,
    running,
    setup,
)
from tests.support.notify_events import needs_reauth, refreshed

__all__ = ["notify_database_url", "setup"]  # the fixtures

EVERY_KIND = {
    kind: Route.NOW
    for kind in ("refreshed", "needs_reauth", "refresh_failed", "revoked", "recovered", "circuit_opened")
}


def mail() -> RecordingChannel:
    return RecordingChannel(name="mail", user_facing=True, routes={"needs_reauth": Route.NOW, "recovered": Route.NOW})


def hook() -> RecordingChannel:
    return RecordingChannel(name="hook", routes=EVERY_KIND)


def quiet_hours_around(now: datetime) -> tuple[str, datetime]:
    """NOTIFY_QUIET_HOURS spanning ``now`` (UTC) and the moment they end."""
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    end = end.replace(second=0, microsecond=0)
    return f"{start:%H:%M}-{end:%H:%M}", end


async def rows_of(setup: Setup, channel: str, user_id: uuid.UUID) -> list[tuple[str, str]]:
    return sorted((row.kind, row.status) for row in await setup.rows(channel=channel, user_id=user_id))


async def test_quiet_hours_delay_a_user_facing_notice_until_they_end(setup: Setup) -> None:
    clock = Clock()
    quiet, end = quiet_hours_around(clock())
    user_facing, other = mail(), hook()
    event = needs_reauth()
    settings = setup.settings(notify_quiet_hours=quiet, notify_quiet_hours_timezone="UTC")
    async with running(settings, [user_facing, other], now=clock):
        await setup.publish(event)
        await eventually(lambda: len(other.sent) == 1, what="the operators' channel is not quiet")
        (row,) = await setup.rows(channel="mail")
        assert row.status == "pending" and row.next_attempt_at == end
        assert user_facing.sent == []
        clock.offset = end - datetime.now(UTC) + timedelta(seconds=1)  # the quiet hours are over
        await eventually(lambda: len(user_facing.sent) == 1, what="sent once the quiet hours ended")
    assert user_facing.sent[0].notice_id == event.event_id


async def test_a_second_reauth_notice_within_the_interval_is_suppressed_on_user_facing_channels(setup: Setup) -> None:
    user_facing, other = mail(), hook()
    user = uuid.uuid4()
    start = datetime.now(UTC) - timedelta(hours=30)
    first, within, after = (needs_reauth(user, start + timedelta(hours=h)) for h in (0, 1, 25))
    someone_else = needs_reauth(at=start + timedelta(hours=1))
    async with running(setup.settings(), [user_facing, other]) as notifier:
        await setup.publish(first, within, after, someone_else)
        await eventually(lambda: len(other.sent) == 4, what="every notice on the operators' channel")
        await eventually(lambda: len(user_facing.sent) == 3, what="the user-facing ones")
        assert metric(notifier, "suppressed", "mail") == 1
        assert metric(notifier, "suppressed", "hook") == 0
    assert {n.notice_id for n in user_facing.sent} == {first.event_id, after.event_id, someone_else.event_id}
    (row,) = await setup.rows(channel="mail", notice_id=within.event_id)
    assert row.status == "suppressed"
    assert_no_secret(user_facing, other)


async def test_a_break_after_the_user_reconnected_is_told_within_the_interval(setup: Setup) -> None:
    """Reconnect, then connected again, then a new break an hour later: three emails, the last one
    saying to reconnect (not a suppressed notice leaving the user told that it works)."""
    user_facing = mail()
    user = uuid.uuid4()
    start = datetime.now(UTC) - timedelta(hours=3)
    first, recovery = needs_reauth(user, start), refreshed(user, start + timedelta(minutes=30))
    again = needs_reauth(user, start + timedelta(hours=1))
    async with running(setup.settings(), [user_facing]):
        await setup.publish(first)
        await eventually(lambda: len(user_facing.sent) == 1, what="the first re-auth notice")
        await setup.publish(recovery)
        await eventually(lambda: len(user_facing.sent) == 2, what="the recovered notice")
        await setup.publish(again)
        await eventually(lambda: len(user_facing.sent) == 3, what="the new break's notice")
    assert [n.kind for n in user_facing.sent] == ["needs_reauth", "recovered", "needs_reauth"]
    assert user_facing.sent[2].notice_id == again.event_id


async def test_a_recovery_is_told_by_the_channels_that_told_the_problem(setup: Setup) -> None:
    user_facing, other = mail(), hook()
    user = uuid.uuid4()
    problem = needs_reauth(user)
    recovery = refreshed(user)
    later = refreshed(user, recovery.occurred_at + timedelta(minutes=5))
    async with running(setup.settings(), [user_facing, other]) as notifier:
        await setup.publish(problem)
        await eventually(lambda: metric(notifier, "sent", "mail") == 1 and metric(notifier, "sent", "hook") == 1)
        await setup.publish(recovery)
        await eventually(lambda: len(user_facing.sent) == 2, what="the recovered notice")
        await setup.publish(later)  # the connection keeps working: nothing more to tell
        await eventually(lambda: len(other.sent) == 4, what="the operators' channel saw both refreshes")
    told = user_facing.sent[1]
    assert told.kind == "recovered" and told.notice_id == recovered_notice_id(recovery.event_id)
    assert told.event["event_id"] == str(recovery.event_id) and told.user_id == user
    assert sorted(n.kind for n in other.sent) == ["needs_reauth", "recovered", "refreshed", "refreshed"]
    assert await rows_of(setup, "mail", user) == [("needs_reauth", "sent"), ("recovered", "sent")]
    assert_no_secret(user_facing, other)


async def test_a_problem_not_told_yet_is_dropped_when_the_connection_recovers(setup: Setup) -> None:
    clock = Clock()
    quiet, end = quiet_hours_around(clock())
    user_facing, other = mail(), hook()
    user = uuid.uuid4()
    settings = setup.settings(notify_quiet_hours=quiet)
    async with running(settings, [user_facing, other], now=clock) as notifier:
        await setup.publish(needs_reauth(user))
        await eventually(lambda: metric(notifier, "sent", "hook") == 1, what="told on the operators' channel")
        await setup.publish(refreshed(user))
        await eventually(lambda: metric(notifier, "dropped", "mail") == 1, what="the held notice dropped")
        await eventually(lambda: len(other.sent) == 3, what="hook: problem, refreshed, recovered")
        clock.offset = end - datetime.now(UTC) + timedelta(seconds=1)
        await eventually_async(lambda: _pending_none(setup), what="nothing left pending after the quiet hours")
    assert user_facing.sent == []  # neither the problem nor a recovery it never told of
    assert await rows_of(setup, "mail", user) == [("needs_reauth", "dropped")]
    assert sorted(n.kind for n in other.sent) == ["needs_reauth", "recovered", "refreshed"]


async def _pending_none(setup: Setup) -> bool:
    return all(row.status not in ("pending", "sending") for row in await setup.rows())


def revocation(user: uuid.UUID, at: datetime) -> TokenRevoked:
    """The user disconnected Spotify at ``at``."""
    return TokenRevoked(
        user_id=user,
        platform="spotify",
        reason="user_request",
        revocation="revoked",
        tokens_wiped=True,
        disconnect_event_id=uuid.uuid4(),
        occurred_at=at,
    )


async def test_a_revoked_connection_is_owed_no_recovery(setup: Setup) -> None:
    user_facing = mail()
    user = uuid.uuid4()
    problem = needs_reauth(user)
    revoked = revocation(user, problem.occurred_at + timedelta(seconds=1))
    async with running(setup.settings(), [user_facing, hook()]) as notifier:
        await setup.publish(problem)
        await eventually(lambda: metric(notifier, "sent", "mail") == 1)
        await setup.publish(revoked)
        await eventually_async(lambda: _has_row(setup, "hook", revoked.event_id), what="the revocation taken in")
        reconnected = refreshed(user, revoked.occurred_at + timedelta(seconds=1))
        await setup.publish(reconnected)
        await eventually_async(lambda: _has_row(setup, "hook", reconnected.event_id), what="the refresh taken in")
    assert await rows_of(setup, "mail", user) == [("needs_reauth", "sent")]
    assert [n.kind for n in user_facing.sent] == ["needs_reauth"]


async def test_a_problem_sent_while_its_connection_was_revoked_is_owed_no_recovery(setup: Setup) -> None:
    """The re-auth email is being sent when the disconnect is read; it goes out, but a later
    re-connection owes no "connected again" for it."""
    release = asyncio.Event()

    async def slow(notice: Notice, call: int) -> None:
        await release.wait()

    user_facing = RecordingChannel(
        name="mail", user_facing=True, routes={"needs_reauth": Route.NOW, "recovered": Route.NOW}, behaviour=slow
    )
    user = uuid.uuid4()
    problem = needs_reauth(user)
    revoked = revocation(user, problem.occurred_at + timedelta(seconds=1))
    async with running(setup.settings(), [user_facing, hook()]) as notifier:
        await setup.publish(problem)
        await eventually(lambda: len(user_facing.calls) == 1, what="the email being sent")
        await setup.publish(revoked)
        await eventually_async(lambda: _has_row(setup, "hook", revoked.event_id), what="the revocation taken in")
        release.set()
        await eventually(lambda: metric(notifier, "sent", "mail") == 1, what="the email sent")
        reconnected = refreshed(user, revoked.occurred_at + timedelta(seconds=1))
        await setup.publish(reconnected)
        await eventually_async(lambda: _has_row(setup, "hook", reconnected.event_id), what="the refresh taken in")
    assert await rows_of(setup, "mail", user) == [("needs_reauth", "sent")]
    assert [n.kind for n in user_facing.sent] == ["needs_reauth"]


async def _has_row(setup: Setup, channel: str, notice_id: uuid.UUID) -> bool:
    return bool(await setup.rows(channel=channel, notice_id=notice_id))


def operators(**options: object) -> RecordingChannel:
    return RecordingChannel(
        name="ops",
        digest_window_seconds=3600,
        routes={"needs_reauth": Route.DIGEST, "recovered": Route.DIGEST},
        **options,  # type: ignore[arg-type]
    )


async def test_digests_once_per_window_and_recovery_drops_a_pending_digest_line(setup: Setup) -> None:
    clock = Clock()
    ops = operators()
    told, held = uuid.uuid4(), uuid.uuid4()
    async with running(setup.settings(), [ops], now=clock) as notifier:
        await setup.publish(needs_reauth(told))
        await eventually(lambda: len(ops.digests) == 1, what="the first digest, at once")
        await setup.publish(needs_reauth(held))
        await eventually_async(lambda: _status_is(setup, "ops", held, "pending"), what="the next one waits")
        await setup.publish(refreshed(held), refreshed(told))
        await eventually(lambda: metric(notifier, "dropped", "ops") == 1, what="the waiting line dropped")
        await eventually_async(lambda: _status_is(setup, "ops", told, "pending", kind="recovered"))
        assert len(ops.digests) == 1  # within the window
        clock.offset = timedelta(seconds=3601)
        await eventually(lambda: len(ops.digests) == 2, what="the next digest after the window")
    (platform, first), (_, second) = ops.digests
    assert platform == "spotify" and [n.user_id for n in first] == [told]
    assert [(n.kind, n.user_id) for n in second] == [("recovered", told)]


async def _status_is(setup: Setup, channel: str, user: uuid.UUID, status: str, kind: str = "needs_reauth") -> bool:
    return (kind, status) in await rows_of(setup, channel, user)


async def test_a_failed_digest_is_retried_and_notices_arriving_meanwhile_wait_for_the_next(setup: Setup) -> None:
    in_flight, fail_it = asyncio.Event(), asyncio.Event()

    async def first_fails_after_a_while(notice: Notice, call: int) -> None:
        if call == 1:
            in_flight.set()
            await fail_it.wait()
            raise DeliveryFailed("slack answered HTTP 503")

    ops = operators(behaviour=first_fails_after_a_while)
    first, meanwhile = needs_reauth(), needs_reauth()
    async with running(setup.settings(), [ops]) as notifier:
        await setup.publish(first)
        await asyncio.wait_for(in_flight.wait(), 15)
        await setup.publish(meanwhile)
        await eventually_async(lambda: _status_is(setup, "ops", meanwhile.user_id, "pending"), what="taken in")
        fail_it.set()
        await eventually(lambda: len(ops.digests) == 1, what="the retried digest")
        assert metric(notifier, "failed", "ops") == 1
    failed, retried = ops.digest_calls
    assert [n.notice_id for n in failed] == [first.event_id]  # the one that came meanwhile waited
    assert [n.notice_id for n in retried] == [first.event_id, meanwhile.event_id]
    ((_, sent),) = ops.digests
    assert sent == retried


CIPHERTEXT = "ab" * 12 + ":" + "cd" * 16 + ":" + "ef" * 24


async def test_a_new_connection_is_a_recovery_and_its_ciphertexts_are_kept_nowhere(setup: Setup) -> None:
    user_facing, other = mail(), hook()
    user = uuid.uuid4()
    problem = needs_reauth(user)
    async with running(setup.settings(), [user_facing, other]) as notifier:
        await setup.publish(problem)
        await eventually(lambda: metric(notifier, "sent", "mail") == 1)
        reconnected = ConnectionCreated(
            user_id=user, platform="spotify", access_token=CIPHERTEXT, refresh_token=CIPHERTEXT, token_expires_at=None
        )
        await setup.publish(reconnected)
        await eventually(lambda: len(user_facing.sent) == 2 and len(other.sent) == 2, what="the recovered notices")
    told = user_facing.sent[1]
    assert told.kind == "recovered" and told.notice_id == recovered_notice_id(reconnected.event_id)
    assert told.event["event_type"] == "connection.created"
    assert [n.kind for n in other.sent] == ["needs_reauth", "recovered"]  # connection.created is no notice itself
    stored = [str(row.event) for row in await setup.rows()]
    assert CIPHERTEXT not in user_facing.everything_told() + other.everything_told() + "".join(stored)


async def test_a_circuit_notice_is_a_platforms_not_a_users(setup: Setup) -> None:
    other = hook()
    opened = ProviderCircuitChanged(platform="spotify", state="open", worker="host:1", cool_down_seconds=60)
    async with running(setup.settings(), [other, mail()]):
        await setup.publish(opened)
        await eventually(lambda: len(other.sent) == 1, what="the circuit notice")
    told = other.sent[0]
    assert (told.kind, told.user_id, told.notice_id, told.platform) == (
        "circuit_opened",
        None,
        opened.event_id,
        "spotify",
    )
    assert [row.channel for row in await setup.rows()] == ["hook"]  # email skips it


async def test_an_outage_is_told_once_across_workers_where_channels_speak_of_platforms(setup: Setup) -> None:
    """Two workers' circuits for one platform open and close: a channel that tells platforms (Slack)
    hears the first opening and the last closing; one that tells every event (webhooks) all four."""

    class PlatformChannel(RecordingChannel):
        def route(self, notice: Notice) -> Route:
            return Route.NOW if notice.kind.startswith("circuit_") and notice.platform_wide else Route.SKIP

    every_circuit = {"circuit_opened": Route.NOW, "circuit_closed": Route.NOW}
    ops, other = PlatformChannel(name="ops"), RecordingChannel(name="hook", routes=every_circuit)
    start = datetime.now(UTC) - timedelta(minutes=10)

    def change(worker: str, state: str, minutes: int) -> ProviderCircuitChanged:
        return ProviderCircuitChanged(
            platform="discord", state=state, worker=worker, occurred_at=start + timedelta(minutes=minutes)
        )

    first_open, second_open = change("host:1", "open", 0), change("host:2", "open", 1)
    first_close, last_close = change("host:1", "closed", 2), change("host:2", "closed", 3)
    async with running(setup.settings(), [ops, other]):
        await setup.publish(first_open, second_open, first_close, last_close)  # one key: one partition, in order
        await eventually(lambda: len(other.sent) == 4, what="every worker's change on the per-event channel")
        await eventually(lambda: len(ops.sent) == 2, what="the platform's outage, begun and ended")
    # (Each notice is its own delivery, sent by one of several senders: in no promised order.)
    assert {n.notice_id for n in ops.sent} == {first_open.event_id, last_close.event_id}
    assert len(other.sent) == 4


async def test_a_problem_read_after_the_connections_recovery_is_not_told(setup: Setup) -> None:
    user_facing, other = mail(), hook()
    user = uuid.uuid4()
    problem = needs_reauth(user)  # happened first ...
    recovery = refreshed(user, problem.occurred_at + timedelta(seconds=5))
    async with running(setup.settings(), [user_facing, other]) as notifier:
        await setup.publish(recovery)  # ... but its topic is read later
        await eventually(lambda: len(other.sent) == 1, what="the refresh told")
        await setup.publish(problem)
        await eventually(lambda: metric(notifier, "dropped", "mail") == 1, what="the stale problem dropped")
        assert metric(notifier, "dropped", "hook") == 1
    assert await rows_of(setup, "mail", user) == [("needs_reauth", "dropped")]
    assert user_facing.sent == [] and [n.kind for n in other.sent] == ["refreshed"]
