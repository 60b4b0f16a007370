"""The RFC 7009 revocation endpoints: each provider's dialect, the grant they end, faults queued
for them alone, and ground truth without token values."""

from __future__ import annotations

import httpx
import pytest

from stream_app.sandbox import SandboxServer


def _revoke(sandbox: SandboxServer, http: httpx.Client, route: str, token: str, auth: tuple[str, str] | None):
    return http.post(
        f"{sandbox.base_url}/{route}/revoke",
        data={"token": token, "token_type_hint": "refresh_token"},
        auth=auth,
    )


@pytest.mark.parametrize(
    ("platform", "route", "body"),
    [("youtube", "google", {}), ("discord", "discord", {}), ("x", "x", {"revoked": True})],
)
def test_revoking_a_refresh_token_ends_the_whole_grant(
    sandbox: SandboxServer, http: httpx.Client, refresh, platform: str, route: str, body: dict[str, object]
) -> None:
    grant = sandbox.create_grant(platform)
    auth = None if route == "google" else sandbox.credentials(platform)

    answer = _revoke(sandbox, http, route, grant["live_refresh_token"], auth)

    assert (answer.status_code, answer.json()) == (200, body)
    assert sandbox.state.grant(grant["grant_id"]).revoked  # type: ignore[union-attr]
    assert refresh(platform, grant["live_refresh_token"]).status_code in (400, 401)
    (seen,) = sandbox.state.revocations()
    assert seen["outcome"] == "revoked" and seen["grant_id"] == grant["grant_id"] and seen["live_token"] is True
    assert grant["live_refresh_token"] not in repr(sandbox.state.revocations())


def test_an_unknown_token_is_google_s_400_and_rfc_7009_s_200_elsewhere(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    google = _revoke(sandbox, http, "google", "sbx_rt_unknown", None)
    discord = _revoke(sandbox, http, "discord", "sbx_rt_unknown", sandbox.credentials("discord"))

    assert (google.status_code, google.json()["error"]) == (400, "invalid_token")
    assert (discord.status_code, discord.json()) == (200, {})


def test_a_wrong_client_is_refused_and_nothing_is_revoked(sandbox: SandboxServer, http: httpx.Client) -> None:
    grant = sandbox.create_grant("x")

    answer = _revoke(sandbox, http, "x", grant["live_refresh_token"], ("x-client", "wrong"))

    assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized_client")
    assert not sandbox.state.grant(grant["grant_id"]).revoked  # type: ignore[union-attr]


@pytest.mark.parametrize("route", ["spotify", "github_app", "github", "slack"])
def test_platforms_without_an_rfc_7009_endpoint_answer_404(
    sandbox: SandboxServer, http: httpx.Client, route: str
) -> None:
    assert _revoke(sandbox, http, route, "whatever", None).status_code == 404


def test_a_fault_queued_for_the_revocation_endpoint_answers_it_and_not_the_token_endpoint(
    sandbox: SandboxServer, http: httpx.Client, refresh
) -> None:
    grant = sandbox.create_grant("discord")
    sandbox.state.add_fault({"platform": "discord", "mode": "server_error", "endpoint": "revoke"})

    assert refresh("discord", grant["live_refresh_token"]).status_code == 200  # not the fault's
    failed = _revoke(sandbox, http, "discord", grant["live_access_token"], sandbox.credentials("discord"))
    again = _revoke(sandbox, http, "discord", grant["live_access_token"], sandbox.credentials("discord"))

    assert failed.status_code == 500 and again.status_code == 200
    assert [entry["outcome"] for entry in sandbox.state.revocations()] == ["fault:server_error", "revoked"]
    assert sandbox.state.grant(grant["grant_id"]).revoked  # type: ignore[union-attr]


def test_revocation_faults_are_queued_only_of_modes_that_make_sense_there(sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match="revocation endpoint takes queued faults"):
        sandbox.state.add_fault({"platform": "discord", "mode": "echo_secrets", "endpoint": "revoke"})
    with pytest.raises(ValueError, match="revocation endpoint takes queued faults"):
        sandbox.state.add_fault_rule({"platform": "discord", "mode": "server_error", "endpoint": "revoke"})
    with pytest.raises(ValueError, match="endpoint must be one of"):
        sandbox.state.add_fault({"platform": "discord", "mode": "server_error", "endpoint": "authorize"})
