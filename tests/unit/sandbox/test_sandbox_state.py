"""SandboxState alone: pure grant bookkeeping, no HTTP."""

from __future__ import annotations

import pytest

from stream_app.sandbox import SandboxError, SandboxState
from stream_app.sandbox.state import Verdict


def test_single_use_spend_and_x_family_kill():
    state = SandboxState()
    g = state.create_grant("x")
    first = g.live_refresh_token
    result = state.refresh("x", first)
    assert result.verdict is Verdict.OK and result.rotated
    assert state.refresh("x", first).verdict is Verdict.REUSED
    assert g.revoked and g.revoked_reason == "reuse_detected"
    assert state.refresh("x", result.refresh_token).verdict is Verdict.REVOKED


def test_tokens_are_bound_to_their_dialect():
    state = SandboxState()
    g = state.create_grant("youtube")
    assert state.refresh("spotify", g.live_refresh_token).verdict is Verdict.UNKNOWN
    ok = state.refresh("google", g.live_refresh_token)
    assert ok.verdict is Verdict.OK and ok.refresh_token is None and not ok.rotated


def test_same_rotation_repeats_the_token():
    state = SandboxState()
    g = state.create_grant("reddit")
    result = state.refresh("reddit", g.live_refresh_token)
    assert result.refresh_token == g.live_refresh_token and not result.rotated


def test_faults_count_down_and_google_queue_is_shared():
    state = SandboxState()
    state.add_fault({"platform": "google", "mode": "server_error", "count": 2})
    assert state.take_fault("gmail").mode.value == "server_error"
    assert state.take_fault("youtube").count == 1
    assert state.take_fault("google_calendar") is None
    assert state.take_fault("spotify") is None


def test_create_grant_validates():
    state = SandboxState()
    with pytest.raises(SandboxError):
        state.create_grant("github")
    with pytest.raises(SandboxError):
        state.add_fault({"platform": "spotify", "mode": "timeout", "delay": -1})
