"""The token-health dashboard in real headless Chromium (Debian's chromium and chromedriver,
installed when missing: tests/support/browser.py), served by uvicorn over a seeded database of
its own: the page refuses a wrong admin token, shows exactly the seeded figures with the right
one, and its bulk refresh button runs a job to the end; the browser logs no error.

The bulk job is run by the bulk runner (stream_app.bulk.runner) in-process, on the server's
loop, through the real refresh engine against the provider sandbox: the page -> API -> job
store -> runner -> engine -> database path is the production one. A worker process would add
its start-up (consumer groups, ~15 s) for nothing this test judges; agents/bulk.py's wiring of
the same runner is tested with a real worker in test_bulk_jobs.py."""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import text

from stream_app.bulk import BulkSettings
from stream_app.bulk.runner import BULK_TRIGGER, BulkRunner
from stream_app.clock import utc_now
from stream_app.db.rollup import Tally, add_tallies
from stream_app.http import HttpServer, create_app
from stream_app.sandbox import SandboxServer
from stream_app.service import TokenService
from stream_app.settings import load_settings
from tests.support.browser import headless_chromium, save_full_page
from tests.support.connections import seed_connection
from tests.support.kafka import create_topics, produce

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

ADMIN = secrets.token_urlsafe(32)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
WAIT_SECONDS = 20
T = TypeVar("T")

# What the seeded database holds, as the page must show it.
CONNECTIONS = {
    ("spotify", "connected"): 3,
    ("spotify", "error"): 2,
    ("discord", "connected"): 1,
    ("discord", "token_expired"): 1,
    ("discord", "needs_reauth"): 2,
}
EXPIRING_BUCKETS = {0: 1, 2: 1, 8: 1}  # the three connected spotify tokens, per 5 minutes
ACTIVITY = {"refreshed": 40, "failed": 3, "needs_reauth": 2, "deferred": 5}
DEAD_LETTERS = 3


class LoopThread:
    """An event loop in a thread of its own: the server, the runner and the database live
    there, while the test drives the browser with blocking calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dashboard-server", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Probe:
    """The worker's probe, as far as the dashboard reads it."""

    def circuit_states(self) -> dict[str, str]:
        return {"spotify": "closed", "discord": "open"}

    def consumer_groups(self) -> dict[str, bool]:
        return {}

    async def partition_lag(self) -> dict[tuple[str, int], int]:
        return {}

    def stuck_circuits(self) -> list[str]:
        return []

    def unknown_key_ids(self) -> list[str]:
        return []

    def spooled_tokens(self) -> int:
        return 0


@dataclass
class Served:
    url: str
    service: TokenService
    loop: LoopThread
    reauth_users: list[uuid.UUID]
    error_grants: list[str]
    dead_letter_topic: str


async def seed(service: TokenService, sandbox: SandboxServer) -> tuple[list[uuid.UUID], list[str]]:
    db, cipher = service.database, service.cipher

    async def connect(platform: str, minutes: float) -> tuple[uuid.UUID, dict[str, Any]]:
        return await seed_connection(db, cipher, sandbox, platform, expires_in=timedelta(minutes=minutes))

    async def set_status(user: uuid.UUID, status: str, error: str | None) -> None:
        async with db.transaction() as session:
            await session.execute(
                text(
                    "UPDATE platform_connections SET status = :status, last_sync_status = 'error', "
                    "last_sync_error = :error WHERE user_id = :user"
                ),
                {"status": status, "error": error, "user": user},
            )

    for minutes in (2.5, 12.5, 42.5):  # mid-bucket: the page loads seconds later
        await connect("spotify", minutes)
    error_grants = []
    for _ in range(2):  # recovered by the bulk job (the client secret was fixed meanwhile)
        user, grant = await connect("spotify", 120)
        await set_status(user, "error", "invalid_client: the client secret was refused (HTTP 401)")
        error_grants.append(grant["grant_id"])
    await connect("discord", 120)
    expired, _ = await connect("discord", -10)
    await set_status(expired, "token_expired", "server_error: HTTP 503")
    reauth = []
    for _ in range(2):
        user, _ = await connect("discord", 30)
        await set_status(user, "needs_reauth", "invalid_grant: the grant was revoked (HTTP 400)")
        reauth.append(user)

    now = utc_now()
    async with db.transaction() as session:
        await add_tallies(session, [Tally("spotify", "refreshed", "")] * 40, now - timedelta(hours=3))
        await add_tallies(session, [Tally("spotify", "failed", "server_error")] * 3, now - timedelta(hours=3))
        await add_tallies(session, [Tally("discord", "needs_reauth", "invalid_grant")] * 2, now - timedelta(hours=10))
        await add_tallies(session, [Tally("discord", "deferred", "rate_limited")] * 5, now - timedelta(hours=1))
        # Older than the 24 hours shown.
        await add_tallies(session, [Tally("spotify", "refreshed", "")] * 99, now - timedelta(hours=30))
    return reauth, error_grants


@pytest.fixture
def served(
    own_database_url: str,
    sandbox: SandboxServer,
    encryption_key: str,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Served]:
    for name, value in sandbox.service_env().items():
        monkeypatch.setenv(name, value)
    suffix = uuid.uuid4().hex[:8]
    created, expiring = f"connection.created.{suffix}", f"token.expiring.{suffix}"
    settings = load_settings(
        encryption_key=encryption_key,
        database_url=own_database_url,
        admin_tokens=ADMIN,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_connection_created=created,
        topic_token_expiring=expiring,
        token_spool_dir=tmp_path / "spool",
    )
    loop = LoopThread()
    service = TokenService(settings)

    async def start() -> tuple[HttpServer, asyncio.Task[None], list[uuid.UUID], list[str]]:
        await create_topics(kafka_bootstrap, [f"{created}.dlq", f"{expiring}.dlq"], partitions=1)
        await produce(kafka_bootstrap, f"{created}.dlq", [(b"k", b"sealed")] * DEAD_LETTERS)
        reauth, grants = await seed(service, sandbox)
        server = HttpServer(create_app(service, Probe()), "127.0.0.1", 0)
        server.start()

        async def refresh(user_id: uuid.UUID, platform: str) -> Any:
            return await service.engine.refresh(user_id, platform, trigger=BULK_TRIGGER)

        bulk = replace(BulkSettings.defaults(), poll_interval_seconds=0.2, save_interval_seconds=0.2)
        runner = BulkRunner(service.database, refresh, bulk, owner=f"dashboard-test:{suffix}")
        return server, asyncio.get_running_loop().create_task(runner.run_forever()), reauth, grants

    server, runner, reauth, grants = loop.run(start())

    async def stop() -> None:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.stop()
        await service.aclose()

    try:
        yield Served(f"http://127.0.0.1:{server.port}", service, loop, reauth, grants, f"{created}.dlq")
    finally:
        loop.run(stop())
        loop.close()


def shown(driver: Any, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).get_attribute("textContent")).strip()


def number(driver: Any, selector: str) -> int:
    return int(shown(driver, selector))


def errors_in(log: list[dict[str, Any]]) -> list[str]:
    return [entry["message"] for entry in log if entry["level"] in ("SEVERE", "WARNING")]


def test_the_dashboard_shows_the_database_and_recovers_error_rows(served: Served, sandbox: SandboxServer) -> None:
    with headless_chromium() as driver:
        wait = WebDriverWait(driver, WAIT_SECONDS)
        driver.get(served.url + "/dashboard")

        # A wrong token is refused: no figure reaches the page, the token is forgotten.
        driver.find_element(By.ID, "token").send_keys(secrets.token_urlsafe(32) + "\n")
        wait.until(lambda d: d.find_element(By.ID, "refused").is_displayed())
        assert shown(driver, "#refused").startswith("refused")
        assert not driver.find_element(By.ID, "board").is_displayed()
        assert driver.find_elements(By.CSS_SELECTOR, "#connections td") == []
        assert driver.execute_script("return sessionStorage.length") == 0
        refused_log = errors_in(driver.get_log("browser"))
        assert refused_log and all("/dashboard/data" in m and "401" in m for m in refused_log), refused_log

        # The admin token opens it; it stays in the tab, never in the URL.
        driver.find_element(By.ID, "token").send_keys(ADMIN + "\n")
        wait.until(lambda d: d.find_element(By.ID, "updated").get_attribute("data-loaded") == "true")
        assert ADMIN not in driver.current_url
        assert driver.find_element(By.ID, "refused").is_displayed() is False

        for platform in ("spotify", "discord"):
            for status in ("connected", "token_expired", "error", "needs_reauth", "disconnected"):
                cell = f'#connections td[data-platform="{platform}"][data-status="{status}"]'
                assert number(driver, cell) == CONNECTIONS.get((platform, status), 0), (platform, status)
        assert [number(driver, f'#expiring td[data-bucket="{i}"]') for i in range(12)] == [
            EXPIRING_BUCKETS.get(i, 0) for i in range(12)
        ]
        assert number(driver, "#already-expired") == 1  # the token_expired discord row
        for outcome, count in ACTIVITY.items():
            assert number(driver, f'#activity-totals strong[data-outcome="{outcome}"]') == count, outcome
        assert number(driver, '#failures td[data-error-class="server_error"][data-outcome="failed"]') == 3
        assert number(driver, '#failures td[data-error-class="invalid_grant"][data-outcome="needs_reauth"]') == 2
        assert number(driver, "#reauth-total") == 2
        reauth_cells = driver.find_elements(By.CSS_SELECTOR, "#reauth td[data-user]")
        users = {str(cell.get_attribute("data-user")) for cell in reauth_cells}
        assert users == {served.service.hash_user_id(user) for user in served.reauth_users}
        assert not any(str(user) in driver.page_source for user in served.reauth_users)
        assert shown(driver, '#circuits td[data-platform="discord"]') == "open"
        assert number(driver, f'#dead-letters td[data-topic="{served.dead_letter_topic}"]') == DEAD_LETTERS
        assert shown(driver, "#dlq-command") == "token-refresh dlq show <topic>"

        # Recover spotify's error rows: choose, confirm, follow the job to its end.
        Select(driver.find_element(By.ID, "bulk-platform")).select_by_value("spotify")
        rate = driver.find_element(By.ID, "bulk-rate")
        rate.clear()
        rate.send_keys("20")
        driver.find_element(By.ID, "bulk-start").click()
        wait.until(lambda d: d.find_element(By.ID, "bulk-confirm").is_displayed())
        assert "Refresh the 2 connection(s) of spotify with status error" in shown(driver, "#bulk-confirm-text")
        driver.find_element(By.ID, "bulk-go").click()
        wait.until(lambda d: d.find_element(By.ID, "bulk-status").get_attribute("data-status") == "succeeded")
        assert driver.find_element(By.ID, "bulk-bar").get_attribute("value") == "100"
        assert number(driver, '#bulk-counts strong[data-outcome="refreshed"]') == 2
        assert shown(driver, "#bulk-done") == "2 of 2 handled"

        # The page reloads its figures: the rows are connected, their refreshes in the rollup.
        error_cell = '#connections td[data-platform="spotify"][data-status="error"]'
        wait.until(lambda d: number(d, error_cell) == 0)
        assert number(driver, '#connections td[data-platform="spotify"][data-status="connected"]') == 5
        assert number(driver, '#activity-totals strong[data-outcome="refreshed"]') == ACTIVITY["refreshed"] + 2
        for grant_id in served.error_grants:
            grant = sandbox.state.grant(grant_id)
            assert grant is not None and grant.refresh_count == 1
            assert grant.live_access_token not in driver.page_source

        assert errors_in(driver.get_log("browser")) == []
        save_full_page(driver, SCREENSHOT)

    async def statuses() -> dict[str, int]:
        async with served.service.database.sessions() as session:
            rows = await session.execute(
                text("SELECT status, count(*) FROM platform_connections WHERE platform = 'spotify' GROUP BY status")
            )
            return {status: count for status, count in rows}

    assert served.loop.run(statuses()) == {"connected": 5}
