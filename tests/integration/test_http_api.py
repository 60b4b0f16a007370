"""The HTTP API (stream_app.http) on real Postgres and the provider sandbox: health and
readiness, the operational metrics, bearer tokens by scope, and the admin endpoints."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from stream_app.db import ConnectionStatus
from stream_app.http import HttpServer, create_app
from stream_app.http.server import MAX_BODY_BYTES
from stream_app.sandbox import SandboxServer
from stream_app.service import TokenService
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres

ADMIN = secrets.token_hex(24)
ADMIN_NEXT = secrets.token_hex(24)  # the rotation's second admin token
TOKEN_READER = secrets.token_urlsafe(32)


class FakeWorker:
    """A worker's probe with figures of the test's choosing."""

    def __init__(self) -> None:
        self.groups = {"token-refresh-refresh": True, "token-refresh-ingest": True}
        self.lags = {("token.expiring", 0): 7, ("token.expiring", 1): 0}
        self.circuits = {"spotify": "closed", "discord": "open"}
        self.stuck: list[str] = []
        self.unknown_keys: list[str] = []
        self.spooled = 2

    def consumer_groups(self) -> dict[str, bool]:
        return self.groups

    async def partition_lag(self) -> dict[tuple[str, int], int]:
        return self.lags

    def circuit_states(self) -> dict[str, str]:
        return self.circuits

    def stuck_circuits(self) -> list[str]:
        return self.stuck

    def unknown_key_ids(self) -> list[str]:
        return self.unknown_keys

    def spooled_tokens(self) -> int:
        return self.spooled


def client(service: TokenService, probe: FakeWorker | None = None) -> httpx.AsyncClient:
    app = create_app(service, probe)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def own_service(make_service: ServiceFactory, own_database_url: str) -> TokenService:
    return make_service(
        database_url=own_database_url,
        admin_tokens=f"{ADMIN},{ADMIN_NEXT}",
        token_endpoint_tokens=TOKEN_READER,
    )


@pytest.fixture
async def api(own_service: TokenService) -> AsyncIterator[httpx.AsyncClient]:
    async with client(own_service, FakeWorker()) as http:
        yield http


# --- health ------------------------------------------------------------------------------


async def test_alive_and_ready_with_every_check_named(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"alive": True}
    answer = await api.get("/readyz")
    assert answer.status_code == 200, answer.text
    checks = answer.json()["checks"]
    assert set(checks) == {"database", "migrations", "consumer_groups", "circuits", "encryption_keys"}
    assert all(check["ok"] for check in checks.values())


@pytest.mark.parametrize(
    ("change", "failing", "named"),
    [
        (lambda w: w.groups.update({"token-refresh-ingest": False}), "consumer_groups", "token-refresh-ingest"),
        (lambda w: setattr(w, "groups", {}), "consumer_groups", ""),
        (lambda w: setattr(w, "stuck", ["discord"]), "circuits", "discord"),
        (lambda w: setattr(w, "unknown_keys", ["1c84c72c"]), "encryption_keys", "1c84c72c"),
    ],
    ids=["group-not-joined", "no-consumer-yet", "stuck-circuit", "unknown-key"],
)
async def test_not_ready_names_the_failing_check(
    own_service: TokenService, change: Any, failing: str, named: str
) -> None:
    worker = FakeWorker()
    change(worker)
    async with client(own_service, worker) as api:
        answer = await api.get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["ready"] is False
    assert [name for name, check in body["checks"].items() if not check["ok"]] == [failing]
    assert named in body["checks"][failing]["detail"]


async def test_not_ready_while_migrations_are_behind(own_service: TokenService) -> None:
    async with own_service.database.transaction() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    async with client(own_service) as api:
        answer = await api.get("/readyz")
    assert answer.status_code == 503
    assert "token-refresh migrate" in answer.json()["checks"]["migrations"]["detail"]


async def test_not_ready_without_a_database(make_service: ServiceFactory) -> None:
    service = make_service(database_url="postgresql+asyncpg://nobody:secret-pw@127.0.0.1:1/none")
    async with client(service) as api:
        answer = await api.get("/readyz")
        assert (await api.get("/healthz")).status_code == 200
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert not checks["database"]["ok"] and not checks["migrations"]["ok"]
    assert "secret-pw" not in answer.text


# --- metrics -----------------------------------------------------------------------------


async def test_metrics_carry_what_an_operator_alerts_on(
    api: httpx.AsyncClient, own_service: TokenService, sandbox: SandboxServer
) -> None:
    for platform in ("spotify", "spotify", "discord"):
        await seed_connection(
            own_service.database, own_service.cipher, sandbox, platform, expires_in=timedelta(hours=2)
        )
    async with own_service.database.transaction() as session:
        await session.execute(text("UPDATE platform_connections SET status = 'error' WHERE platform = 'discord'"))
        await session.execute(
            text(
                "INSERT INTO outbox_events (event_id, topic, key, payload, created_at) "
                "VALUES (:id, 'token.refreshed', 'k', 'v', (now() at time zone 'utc') - interval '90 seconds')"
            ),
            {"id": uuid.uuid4()},
        )

    body = (await api.get("/metrics")).text

    def value(name: str, **labels: str) -> float:
        label_text = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
        pattern = re.escape(f"{name}{{{label_text}}}" if labels else name) + r" ([0-9.e+-]+)"
        found = re.search(rf"^{pattern}$", body, re.MULTILINE)
        assert found, f"{name} {labels} missing"
        return float(found.group(1))

    assert value("token_refresh_connections", platform="spotify", status="connected") == 2
    assert value("token_refresh_connections", platform="discord", status="error") == 1
    assert value("token_refresh_outbox_unpublished") == 1
    assert 85 <= value("token_refresh_outbox_oldest_unpublished_age_seconds") < 200
    assert value("token_refresh_consumer_lag", partition="0", topic="token.expiring") == 7
    assert value("token_refresh_consumer_group_joined", group="token-refresh-ingest") == 1
    assert value("token_refresh_circuit_state", platform="discord", state="open") == 1
    assert value("token_refresh_circuit_state", platform="discord", state="closed") == 0
    assert value("token_refresh_spooled_tokens") == 2
    assert "token_refresh_last_scan_success_timestamp_seconds" in body
    assert "token_refresh_dead_letter_records" in body or "# HELP token_refresh_dead_letter_records" in body


# --- bearer tokens -----------------------------------------------------------------------


async def test_admin_endpoints_want_an_admin_token(api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"/platforms/health?user_id={uuid.uuid4()}"
    missing = await api.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert (await api.get(url, headers={"Authorization": f"Basic {ADMIN}"})).status_code == 401
    assert (await api.get(url, headers=bearer(ADMIN[:-1]))).status_code == 401
    assert (await api.get(url, headers=bearer(secrets.token_hex(24)))).status_code == 401
    assert (await api.get(url, headers=bearer(TOKEN_READER))).status_code == 403
    assert (await api.get(url, headers=bearer(ADMIN))).status_code == 200
    assert (await api.get(url, headers=bearer(ADMIN_NEXT))).status_code == 200
    token_url = f"/connections/{uuid.uuid4()}/spotify/token"
    assert (await api.get(token_url, headers=bearer(ADMIN))).status_code == 403
    assert ADMIN not in caplog.text and ADMIN_NEXT not in caplog.text and TOKEN_READER not in caplog.text


async def test_without_admin_tokens_configured_nothing_is_admitted(
    make_service: ServiceFactory, own_database_url: str
) -> None:
    service = make_service(database_url=own_database_url)
    async with client(service) as api:
        assert (await api.get(f"/platforms/health?user_id={uuid.uuid4()}", headers=bearer(ADMIN))).status_code == 401
        # The token endpoint does not exist unless TOKEN_ENDPOINT_TOKENS is set.
        assert (await api.get(f"/connections/{uuid.uuid4()}/spotify/token")).status_code == 404


# --- admin endpoints ---------------------------------------------------------------------


async def test_a_manual_refresh_refreshes_now(
    api: httpx.AsyncClient, own_service: TokenService, sandbox: SandboxServer
) -> None:
    user_id, grant = await seed_connection(
        own_service.database, own_service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    answer = await api.post(f"/connections/{user_id}/spotify/refresh", headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "refreshed" and answer.json()["status"] == "connected"
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.refresh_count == 1
    assert truth.live_access_token not in answer.text and truth.live_refresh_token not in answer.text

    assert (await api.post(f"/connections/{uuid.uuid4()}/spotify/refresh", headers=bearer(ADMIN))).status_code == 404
    assert (await api.post(f"/connections/{user_id}/myspace/refresh", headers=bearer(ADMIN))).status_code == 404


async def test_platform_health_of_a_user_never_shows_a_token(
    make_service: ServiceFactory, own_database_url: str, sandbox: SandboxServer
) -> None:
    service = make_service(database_url=own_database_url, admin_tokens=ADMIN, admin_user_ids="raw")
    user_id, spotify = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(minutes=30)
    )
    async with service.database.transaction() as session:
        await session.execute(
            text(
                "UPDATE platform_connections SET status = 'needs_reauth', last_sync_status = 'error', "
                "last_sync_error = 'invalid_grant: the grant was revoked (HTTP 400)' WHERE user_id = :user"
            ),
            {"user": user_id},
        )
    async with client(service) as api:
        answer = await api.get(f"/platforms/health?user_id={user_id}", headers=bearer(ADMIN))
    assert answer.status_code == 200
    body = answer.json()
    assert body["user"] == str(user_id)
    [health] = body["platforms"]
    assert health["platform"] == "spotify" and health["status"] == "needs_reauth" and health["needs_reauth"]
    assert health["last_error_class"] == "invalid_grant"
    assert 1700 < health["expires_in_seconds"] <= 1800
    assert spotify["live_access_token"] not in answer.text and spotify["live_refresh_token"] not in answer.text


async def test_connections_are_listed_a_page_at_a_time_with_hashed_ids(
    api: httpx.AsyncClient, own_service: TokenService, sandbox: SandboxServer
) -> None:
    users = []
    for expires in (timedelta(minutes=10), timedelta(minutes=20), timedelta(hours=5), timedelta(hours=6)):
        user_id, _ = await seed_connection(
            own_service.database, own_service.cipher, sandbox, "discord", expires_in=expires
        )
        users.append(user_id)
    await seed_connection(own_service.database, own_service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1))
    async with own_service.database.transaction() as session:
        await session.execute(
            text("UPDATE platform_connections SET status = 'token_expired' WHERE user_id = :user"), {"user": users[3]}
        )

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"platform": "discord", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/connections", params=params, headers=bearer(ADMIN))).json()
        seen += page["connections"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 4 and {c["platform"] for c in seen} == {"discord"}
    assert {c["user"] for c in seen} == {own_service.hash_user_id(u) for u in users}
    assert not any(str(u) in str(seen) for u in users)

    soon = (await api.get("/connections", params={"expiring_within": 1800}, headers=bearer(ADMIN))).json()
    assert len(soon["connections"]) == 2
    expired = await api.get("/connections", params={"status": [ConnectionStatus.TOKEN_EXPIRED]}, headers=bearer(ADMIN))
    assert [c["user"] for c in expired.json()["connections"]] == [own_service.hash_user_id(users[3])]
    assert (await api.get("/connections", params={"cursor": "nonsense!"}, headers=bearer(ADMIN))).status_code == 422


async def test_the_token_endpoint_hands_out_a_valid_token_with_its_own_credential(
    api: httpx.AsyncClient, own_service: TokenService, sandbox: SandboxServer
) -> None:
    user_id, grant = await seed_connection(
        own_service.database, own_service.cipher, sandbox, "discord", expires_in=timedelta(minutes=1)
    )
    answer = await api.get(f"/connections/{user_id}/discord/token", headers=bearer(TOKEN_READER))
    assert answer.status_code == 200
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.refresh_count == 1  # due: refreshed first
    assert answer.json() == {"access_token": truth.live_access_token, "token_type": "Bearer"}
    missing = await api.get(f"/connections/{uuid.uuid4()}/discord/token", headers=bearer(TOKEN_READER))
    assert missing.status_code == 404


async def test_a_body_too_large_is_refused_before_any_route_reads_it(own_service: TokenService) -> None:
    server = HttpServer(create_app(own_service), "127.0.0.1", 0)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            declared = await http.post("/refresh/bulk", content=b"x" * (MAX_BODY_BYTES + 1))

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
                for _ in range(3):
                    yield b"x" * MAX_BODY_BYTES

            streamed = await http.post("/refresh/bulk", content=chunks(), headers=bearer(ADMIN))
            small = await http.post("/refresh/bulk", json={"selector": {}}, headers=bearer(ADMIN))
    finally:
        await server.stop()
    assert declared.status_code == 413 and streamed.status_code == 413
    assert small.status_code == 202
