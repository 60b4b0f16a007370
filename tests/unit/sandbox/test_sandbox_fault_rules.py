"""Fault rules (random faults during a window) and the ground truth chaos runs read:
per-grant refresh times, double spends, revocation times."""

from __future__ import annotations

import random

import pytest

from stream_app.sandbox import SandboxError, SandboxState
from stream_app.sandbox.state import FaultMode, Verdict


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SandboxState:
    return SandboxState(clock=clock, rng=random.Random(7))


def test_a_rule_faults_its_platform_only_during_its_window(state, clock):
    state.add_fault_rule({"platform": "spotify", "mode": "server_error", "status": 503, "start_in": 10, "duration": 60})
    assert state.take_fault("spotify") is None  # not started yet
    clock.now += 10
    fault = state.take_fault("spotify")
    assert fault is not None and fault.mode is FaultMode.SERVER_ERROR and fault.status == 503
    assert state.take_fault("discord") is None
    clock.now += 59.9
    assert state.take_fault("spotify") is not None
    clock.now += 0.1
    assert state.take_fault("spotify") is None  # over
    [rule] = state.fault_rules()
    assert (rule["starts_at"], rule["ends_at"], rule["active"], rule["hits"]) == (1010.0, 1070.0, False, 2)


def test_background_rates_share_one_draw(state):
    for mode, probability in (("server_error", 0.2), ("rate_limit", 0.05), ("timeout", 0.02)):
        state.add_fault_rule({"platform": "*", "mode": mode, "probability": probability, "retry_after": 2})
    draws = 20_000
    seen = {mode: 0 for mode in FaultMode}
    for index in range(draws):
        fault = state.take_fault(("spotify", "discord", "youtube")[index % 3])
        if fault is not None:
            seen[fault.mode] += 1
    assert seen[FaultMode.SERVER_ERROR] / draws == pytest.approx(0.2, abs=0.015)
    assert seen[FaultMode.RATE_LIMIT] / draws == pytest.approx(0.05, abs=0.008)
    assert seen[FaultMode.TIMEOUT] / draws == pytest.approx(0.02, abs=0.005)


def test_the_newest_rule_wins_and_google_covers_its_three_platforms(state):
    state.add_fault_rule({"platform": "*", "mode": "server_error", "probability": 0.5})
    state.add_fault_rule({"platform": "google", "mode": "rate_limit", "retry_after": 120})
    modes = {state.take_fault(p).mode for p in ("youtube", "gmail", "google_calendar") for _ in range(50)}
    assert modes == {FaultMode.RATE_LIMIT}
    assert state.take_fault("youtube").retry_after == 120


def test_queued_faults_come_before_rules(state):
    state.add_fault_rule({"platform": "discord", "mode": "server_error"})
    state.add_fault({"platform": "discord", "mode": "rate_limit"})
    assert state.take_fault("discord").mode is FaultMode.RATE_LIMIT
    assert state.take_fault("discord").mode is FaultMode.SERVER_ERROR


def test_ending_rules_keeps_them_as_history(state, clock):
    state.add_fault_rule({"platform": "*", "mode": "server_error"})
    state.add_fault_rule({"platform": "spotify", "mode": "rate_limit", "start_in": 30})
    clock.now += 5
    state.clear_faults()
    clock.now += 60
    assert state.take_fault("spotify") is None
    first, later = state.fault_rules()
    assert (first["starts_at"], first["ends_at"]) == (1000.0, 1005.0)
    assert later["ends_at"] == later["starts_at"]  # never started


@pytest.mark.parametrize(
    "spec",
    [
        {"platform": "spotify", "mode": "server_error", "probability": 0},
        {"platform": "spotify", "mode": "server_error", "probability": 1.5},
        {"platform": "spotify", "mode": "server_error", "duration": 0},
        {"platform": "spotify", "mode": "server_error", "start_in": -1},
        {"platform": "nope", "mode": "server_error"},
        {"platform": "*", "mode": "nope"},
    ],
)
def test_bad_rules_are_refused(state, spec):
    with pytest.raises(SandboxError):
        state.add_fault_rule(spec)


def test_a_spent_single_use_token_presented_again_is_a_double_spend(state, clock):
    grant = state.create_grant("discord", expires_in=60)
    first = grant.live_refresh_token
    clock.now += 1
    assert state.refresh("discord", first).verdict is Verdict.OK
    clock.now += 1
    assert state.refresh("discord", first).verdict is Verdict.REUSED
    snapshot = grant.snapshot()
    assert snapshot["refreshed_at"] == [1001.0]
    assert (snapshot["double_spends"], snapshot["double_spent_at"]) == (1, [1002.0])
    assert not grant.revoked  # Discord does not kill the family


def test_tokens_that_stay_valid_are_never_double_spent(state):
    grant = state.create_grant("spotify", expires_in=60)
    for _ in range(3):
        assert state.refresh("spotify", grant.live_refresh_token).verdict is Verdict.OK
    assert grant.snapshot()["double_spends"] == 0
    assert len(grant.snapshot()["refreshed_at"]) == 3


def test_revocation_time_is_recorded(state, clock):
    grant = state.create_grant("x")
    state.refresh("x", grant.live_refresh_token)
    clock.now += 3
    state.refresh("x", grant.spent_refresh_tokens[0])  # reuse kills X's family
    assert grant.snapshot()["revoked_at"] == 1003.0
    other = state.create_grant("spotify")
    state.revoke(other.grant_id)
    assert other.snapshot()["revoked_at"] == 1003.0


def test_fault_rules_over_http(grant, refresh, sandbox, http):
    g = grant("spotify")
    response = http.post(
        sandbox.admin_url("fault-rules"), json={"platform": "spotify", "mode": "server_error", "status": 503}
    )
    assert response.status_code == 201 and response.json()["active"]
    assert [refresh("spotify", g["refresh_token"]).status_code for _ in range(3)] == [503, 503, 503]
    rules = http.delete(sandbox.admin_url("fault-rules")).json()["rules"]
    assert [(r["hits"], r["active"]) for r in rules] == [(3, False)]
    assert refresh("spotify", g["refresh_token"]).status_code == 200
    assert http.get(sandbox.admin_url("fault-rules")).json()["rules"][0]["ends_at"] is not None
    bad = http.post(sandbox.admin_url("fault-rules"), json={"platform": "spotify", "mode": "timeout", "probability": 2})
    assert bad.status_code == 400


def test_double_spends_over_http(grant, refresh, truth):
    g = grant("discord", expires_in=60)
    assert refresh("discord", g["refresh_token"]).status_code == 200
    assert refresh("discord", g["refresh_token"]).status_code == 400
    seen = truth(g["grant_id"])
    assert seen["double_spends"] == 1 and len(seen["refreshed_at"]) == 1
