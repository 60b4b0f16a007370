"""Hostile review of issue 10 (the operator's surface) on real Postgres and the sandbox.

Each test failed on the code reviewed (commit 964894e and before); each now guards the fix that
followed (bb50621, 5de2398, 94a4bf5, 8bfdb0c, e9062c9, a87a287, and the in-flight limit, the
pacer, the listing's cursor and the unreadable job's fixes after them)."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from stream_app.bulk import BulkJobs, BulkSelector, BulkSettings, JobStatus
from stream_app.bulk.runner import BulkRunner
from stream_app.db.scan import claim_due_page
from stream_app.engine import RefreshResult
from stream_app.http import HttpServer, create_app
from stream_app.sandbox import SandboxServer
from stream_app.service import TokenService
from tests.integration.conftest import ServiceFactory, Stack
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres

ADMIN = secrets.token_hex(24)
TOKEN_READER = secrets.token_urlsafe(32)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(service: TokenService) -> httpx.AsyncClient:
    # A crash in the app is a 500 here (as a real server answers), not an exception in the test.
    transport = httpx.ASGITransport(app=create_app(service), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


@pytest.fixture
def own_service(make_service: ServiceFactory, own_database_url: str) -> TokenService:
    return make_service(database_url=own_database_url, admin_tokens=ADMIN, token_endpoint_tokens=TOKEN_READER)


@pytest.fixture
async def locked_alembic_version(own_database_url: str) -> AsyncIterator[AsyncConnection]:
    """alembic_version locked ACCESS EXCLUSIVE, as a `token-refresh migrate` holds it while it
    runs a long migration (migrate --adopt on a large table, an index build)."""
    engine = create_async_engine(own_database_url)
    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        yield connection
        await transaction.rollback()
    await engine.dispose()


# --- readiness on a database that answers slowly ----------------------------------------


@pytest.mark.usefixtures("locked_alembic_version")
async def test_readyz_answers_while_a_migration_holds_alembic_version(own_service: TokenService) -> None:
    async with client(own_service) as api:
        answer = await asyncio.wait_for(api.get("/readyz"), timeout=8)
    assert answer.status_code == 503
    assert not answer.json()["checks"]["migrations"]["ok"]


async def test_hung_readiness_probes_do_not_starve_the_refresh_path(
    make_service: ServiceFactory, own_database_url: str, locked_alembic_version: AsyncConnection
) -> None:
    service = make_service(
        database_url=own_database_url,
        admin_tokens=ADMIN,
        database_pool_size=1,
        database_max_overflow=0,
        database_pool_timeout_seconds=2,
    )
    async with client(service) as api:
        probes = [asyncio.create_task(api.get("/readyz")) for _ in range(2)]
        await asyncio.sleep(0.5)  # let the probes reach the database (not an assertion)
        try:
            # What a refresh does first: a session through the Database's gate.
            async with service.database.sessions() as session:
                assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        finally:
            for probe in probes:
                probe.cancel()
            await asyncio.gather(*probes, return_exceptions=True)


# --- the token endpoint -----------------------------------------------------------------


async def test_token_endpoint_answer_is_not_cacheable(own_service: TokenService, sandbox: SandboxServer) -> None:
    user_id, _grant = await seed_connection(
        own_service.database, own_service.cipher, sandbox, "discord", expires_in=timedelta(hours=2)
    )
    async with client(own_service) as api:
        answer = await api.get(f"/connections/{user_id}/discord/token", headers=bearer(TOKEN_READER))
    assert answer.status_code == 200
    assert "no-store" in answer.headers.get("cache-control", "")


# --- bulk refresh selectors -------------------------------------------------------------


async def test_an_overflowing_expiring_within_is_a_422(own_service: TokenService) -> None:
    async with client(own_service) as api:
        answer = await api.post(
            "/refresh/bulk",
            json={"selector": {"expiring_within": "99999999999999999999"}, "dry_run": True},
            headers=bearer(ADMIN),
        )
    assert answer.status_code == 422, answer.text


async def test_an_accepted_expiring_within_can_be_evaluated(own_service: TokenService) -> None:
    async with client(own_service) as api:
        answer = await api.post(
            "/refresh/bulk",
            json={"selector": {"expiring_within": "3000000d"}, "dry_run": True},
            headers=bearer(ADMIN),
        )
    if answer.status_code == 422:
        return  # refused up front: fixed
    assert answer.status_code == 202, answer.text
    job_id = uuid.UUID(answer.json()["id"])

    async def never(_user: uuid.UUID, _platform: str) -> RefreshResult:
        raise AssertionError("a dry run refreshes nothing")

    runner = BulkRunner(own_service.database, never, BulkSettings.defaults(), owner="hostile-review")
    assert await runner.run_once()
    view = await BulkJobs(own_service.database).get(job_id)
    assert view is not None
    assert view.status == JobStatus.SUCCEEDED, (view.status, view.last_error)


# --- seed-shaped rows (Node takeover) ---------------------------------------------------


async def test_a_seed_row_with_a_null_status_is_scanned(own_service: TokenService) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    null_status, connected = uuid.uuid4(), uuid.uuid4()
    async with own_service.database.transaction() as session:
        for row_id, status in ((null_status, None), (connected, "connected")):
            await session.execute(
                text(
                    "INSERT INTO platform_connections (id, user_id, platform, access_token, refresh_token, "
                    "token_expires_at, status) VALUES (:id, :user, 'spotify', 'a:b:c', 'a:b:c', :expires, :status)"
                ),
                {"id": row_id, "user": uuid.uuid4(), "expires": now + timedelta(minutes=2), "status": status},
            )
    async with own_service.database.transaction() as session:
        due = await claim_due_page(
            session,
            due_by=now + timedelta(minutes=10),
            requested_before=now,
            after=None,
            limit=100,
            platforms=["spotify"],
            now=now,
        )
    found = {row.id for row in due}
    assert connected in found  # the trigger scheduled the seed-shaped row: the test is not vacuous
    assert null_status in found


async def test_an_overflowing_listing_window_is_a_422(own_service: TokenService) -> None:
    async with client(own_service) as api:
        answer = await api.get("/connections", params={"expiring_within": 10**12}, headers=bearer(ADMIN))
    assert answer.status_code == 422, answer.text


# --- the HTTP server on the worker's event loop -----------------------------------------


async def test_a_client_that_never_finishes_its_headers_is_dropped(own_service: TokenService) -> None:
    server = HttpServer(create_app(own_service), "127.0.0.1", 0)
    server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: ")  # never ends the headers
        await writer.drain()
        try:
            # uvicorn drops an idle kept-alive connection after 5 s; a partial request gets 3x that.
            closed = await asyncio.wait_for(reader.read(), timeout=15)
        except TimeoutError:
            closed = None
        finally:
            writer.close()
        assert closed is not None, "the server still holds a connection that sent no complete request in 15 s"
    finally:
        await server.stop()


async def test_no_bearer_token_or_served_access_token_reaches_a_debug_log(
    own_service: TokenService, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a real socket (uvicorn's own loggers included), at DEBUG: refused, wrong-scope,
    malformed and accepted calls, a crash (500) and the token endpoint's answer."""
    caplog.set_level(logging.DEBUG)
    user_id, grant = await seed_connection(
        own_service.database, own_service.cipher, sandbox, "discord", expires_in=timedelta(minutes=1)
    )
    server = HttpServer(create_app(own_service), "127.0.0.1", 0)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as api:
            calls = [
                api.get("/connections", headers=bearer(ADMIN[:-1])),  # a near miss
                api.get("/connections", headers={"Authorization": f"bearer  {ADMIN}"}),
                api.get("/connections", headers={"Authorization": f"Basic {ADMIN}"}),
                api.get(f"/connections/{user_id}/discord/token", headers=bearer(ADMIN)),  # 403
                api.get("/connections", params={"expiring_within": 10**12}, headers=bearer(ADMIN)),  # refused
                api.post("/refresh/bulk", json={"selector": {"platform": TOKEN_READER}}, headers=bearer(ADMIN)),
                api.get(f"/connections/{user_id}/discord/token", headers=bearer(TOKEN_READER)),
            ]
            answers = [await call for call in calls]
        assert [a.status_code for a in answers] == [401, 200, 401, 403, 422, 422, 200]
    finally:
        await server.stop()
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    for secret in (ADMIN, ADMIN[:-1], TOKEN_READER, truth.live_access_token, truth.live_refresh_token):
        assert secret not in logged


async def test_a_client_that_stops_reading_does_not_hold_the_servers_stop(own_service: TokenService) -> None:
    server = HttpServer(create_app(own_service), "127.0.0.1", 0)
    server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        # 64 pipelined requests for the vendored Chart.js (~13 MB of answers), none of it read.
        request = b"GET /dashboard/static/chart.umd.min.js HTTP/1.1\r\nHost: api\r\n\r\n"
        await loop.sock_sendall(sock, request * 64)
        await asyncio.sleep(1)  # let the server fill the socket's buffers (not an assertion)
        stopped = asyncio.ensure_future(server.stop())
        done, _ = await asyncio.wait({stopped}, timeout=10)
        assert stopped in done, "the HTTP server's stop still waits for a client that does not read"
    finally:
        sock.close()  # lets a stop that waited end
        await asyncio.wait_for(server.stop(), timeout=10)


@pytest.mark.kafka
def test_a_worker_stops_on_sigterm_whatever_its_http_clients_do(stack: Stack) -> None:
    port = int(stack.worker.env["HTTP_PORT"])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /dashboard/static/chart.umd.min.js HTTP/1.1\r\nHost: api\r\n\r\n" * 64)
        time.sleep(1)  # let the worker fill the socket's buffers (not an assertion)
        exited_by_itself = stack.worker.stop(timeout=30)  # SIGTERM; SIGKILL after 30 s
    assert exited_by_itself, "the worker had to be killed: its shutdown waited for an HTTP client"


async def _unreadable_job(service: TokenService) -> tuple[uuid.UUID, uuid.UUID]:
    """A readable job and an older one whose selector this version cannot read: a newer version's
    field (BulkSelector forbids extra fields) during a rolling deploy."""
    jobs = BulkJobs(service.database)
    readable = await jobs.create(BulkSelector(), dry_run=True)
    unreadable = await jobs.create(BulkSelector(), dry_run=True)
    async with service.database.transaction() as session:
        await session.execute(
            text(
                "UPDATE bulk_refresh_jobs SET selector = CAST(:selector AS json), "
                "created_at = created_at - interval '1 minute' WHERE id = :id"
            ),
            {"selector": '{"platform": null, "statuses": ["error"], "tenant": "eu"}', "id": unreadable},
        )
    return readable, unreadable


async def test_a_job_row_this_version_cannot_read_does_not_break_the_listing(own_service: TokenService) -> None:
    readable, _unreadable = await _unreadable_job(own_service)
    async with client(own_service) as api:
        listing = await api.get("/refresh/bulk", headers=bearer(ADMIN))
    assert listing.status_code == 200, listing.text
    assert str(readable) in {job["id"] for job in listing.json()}


async def test_a_job_row_this_version_cannot_read_is_not_taken_for_ever(own_service: TokenService) -> None:
    _readable, unreadable = await _unreadable_job(own_service)

    async def never(_user: uuid.UUID, _platform: str) -> RefreshResult:
        raise AssertionError("a dry run refreshes nothing")

    settings = replace(BulkSettings.defaults(), lease_seconds=0.01)  # each claim's lease lapses at once
    runner = BulkRunner(own_service.database, never, settings, owner="hostile-review")
    status, attempts = "pending", 0
    for _ in range(200):  # bounded: a fixed runner fails the job (or never takes it) long before
        await runner.run_once()  # the oldest job first: the unreadable one
        async with own_service.database.sessions() as session:
            status, attempts = (
                await session.execute(
                    text("SELECT status, attempts FROM bulk_refresh_jobs WHERE id = :id"), {"id": unreadable}
                )
            ).one()
        if status == "failed" or attempts > settings.max_attempts:
            break
    assert status == "failed" or attempts <= settings.max_attempts, (status, attempts)


async def test_idle_connections_do_not_fail_the_liveness_probe(own_service: TokenService) -> None:
    server = HttpServer(create_app(own_service), "127.0.0.1", 0)
    server.start()
    idle: list[asyncio.StreamWriter] = []
    try:
        for _ in range(64):
            _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            idle.append(writer)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as probe:
            answer = await probe.get("/healthz")
        assert answer.status_code == 200, answer.status_code
    finally:
        for writer in idle:
            writer.close()
        await server.stop()


async def test_the_listings_cursor_does_not_carry_a_raw_user_id(
    own_service: TokenService, sandbox: SandboxServer
) -> None:
    assert own_service.settings.admin_user_ids != "raw"
    users = [
        (
            await seed_connection(
                own_service.database, own_service.cipher, sandbox, "discord", expires_in=timedelta(hours=1)
            )
        )[0]
        for _ in range(2)
    ]
    async with client(own_service) as api:
        page = (await api.get("/connections", params={"limit": 1}, headers=bearer(ADMIN))).json()
    cursor = page["next_cursor"]
    assert cursor is not None
    decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8", "replace")
    assert not [user for user in users if str(user) in decoded or str(user) in cursor]


async def test_a_cancel_ends_a_job_whatever_its_rate(own_service: TokenService, sandbox: SandboxServer) -> None:
    for _ in range(3):
        await seed_connection(
            own_service.database, own_service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
        )
    refreshed = asyncio.Event()

    async def refresh(_user: uuid.UUID, _platform: str) -> RefreshResult:
        refreshed.set()
        return RefreshResult("skipped", "test")

    jobs = BulkJobs(own_service.database)
    job_id = await jobs.create(BulkSelector(platform="spotify"), rate_per_platform=0.01)  # the slowest: 100 s apart
    runner = BulkRunner(own_service.database, refresh, BulkSettings.defaults(), owner="hostile-review")
    running = asyncio.create_task(runner.run_once())
    try:
        await asyncio.wait_for(refreshed.wait(), timeout=10)  # the first refresh is not paced
        await jobs.cancel(job_id)
        done, _ = await asyncio.wait({running}, timeout=10)  # saves every 0.5 s see the cancel
        view = await jobs.get(job_id)
        assert running in done and view is not None and view.status == JobStatus.CANCELLED, view
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
