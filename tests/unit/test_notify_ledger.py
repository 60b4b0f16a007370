"""The batch ledger's rules (recovery.Ledger): who is owed a recovered notice, what is dropped,
what the re-auth rate limit sees."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from stream_app.notify.recovery import Ledger, Problem

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
CONNECTION = (uuid.uuid4(), "spotify")


def problem(channel: str, status: str, at: datetime = T0, kind: str = "needs_reauth") -> Problem:
    return Problem(uuid.uuid4(), channel, kind, at, status)


def test_a_recovery_is_owed_by_announcers_and_by_channels_telling_the_problem_right_now() -> None:
    ledger = Ledger()
    ledger.announced[CONNECTION]["mail"] = T0
    ledger.announced[CONNECTION]["later"] = T0 + timedelta(hours=2)  # a problem after the recovery
    in_flight, pending = problem("hook", "sending"), problem("ops", "pending")
    ledger.problems[CONNECTION] = [in_flight, pending]
    owed = ledger.recover(CONNECTION, T0 + timedelta(hours=1))
    assert owed == {"mail", "hook"}
    assert ledger.drop_stored == [(pending.notice_id, "ops")]  # untold: dropped, owed nothing
    assert ledger.announced[CONNECTION] == {"later": T0 + timedelta(hours=2)}
    assert ledger.forget == [(*CONNECTION, T0 + timedelta(hours=1))]
    assert ledger.newly_resolved == {CONNECTION: T0 + timedelta(hours=1)}
    assert ledger.stale(CONNECTION, T0 + timedelta(minutes=30)) and not ledger.stale(
        CONNECTION, T0 + timedelta(hours=2)
    )


def test_a_problem_taken_in_by_the_same_batch_is_dropped_in_place() -> None:
    ledger = Ledger()
    row = {"notice_id": uuid.uuid4(), "channel": "mail", "kind": "needs_reauth", "occurred_at": T0, "problem": True}
    row["status"] = "pending"
    ledger.taken_in(CONNECTION, row)
    assert ledger.reauth_limited(CONNECTION, "mail", T0 + timedelta(hours=23), timedelta(hours=24))
    ledger.recover(CONNECTION, T0 + timedelta(minutes=1))
    assert row["status"] == "dropped" and ledger.drop_stored == []
    # A dropped notice was never told: it does not count against the rate limit.
    assert not ledger.reauth_limited(CONNECTION, "mail", T0 + timedelta(hours=1), timedelta(hours=24))


def test_a_revocation_drops_and_forgets_but_owes_nothing() -> None:
    ledger = Ledger()
    ledger.announced[CONNECTION]["mail"] = T0
    pending = problem("mail", "pending", T0 + timedelta(minutes=1))
    ledger.problems[CONNECTION] = [pending]
    ledger.revoke(CONNECTION, T0 + timedelta(minutes=2))
    assert ledger.drop_stored == [(pending.notice_id, "mail")] and ledger.announced[CONNECTION] == {}
    assert ledger.recover(CONNECTION, T0 + timedelta(minutes=3)) == set()


def test_the_rate_limit_looks_both_ways_within_the_interval() -> None:
    ledger = Ledger()
    ledger.reauths[(CONNECTION, "mail")].append(T0)
    day = timedelta(hours=24)
    assert ledger.reauth_limited(CONNECTION, "mail", T0 - timedelta(hours=23), day)
    assert not ledger.reauth_limited(CONNECTION, "mail", T0 + day, day)
    assert not ledger.reauth_limited(CONNECTION, "hook", T0, day)


def test_a_break_after_a_recovery_is_told_even_within_the_interval() -> None:
    """needs_reauth (told), then the user reconnects, then a new break an hour later: the user
    hears of it, or the last email they got says the broken connection works."""
    ledger, day = Ledger(), timedelta(hours=24)
    ledger.reauths[(CONNECTION, "mail")].append(T0)
    assert ledger.reauth_limited(CONNECTION, "mail", T0 + timedelta(hours=1), day)
    ledger.recover(CONNECTION, T0 + timedelta(minutes=30))
    assert not ledger.reauth_limited(CONNECTION, "mail", T0 + timedelta(hours=1), day)
    # Two breaks on the same side of the recovery still count against each other.
    ledger.reauths[(CONNECTION, "mail")].append(T0 + timedelta(hours=1))
    assert ledger.reauth_limited(CONNECTION, "mail", T0 + timedelta(hours=2), day)
