"""Where the email channel finds a user's address: a SQL query on the product's database (the
real Postgres; SQLite for the demo's shape) or an HTTP lookup (a local aiohttp server); and the
whole channel built from its environment variables, sending through a real SMTP server."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from stream_app.notify.channel import DeliveryFailed
from stream_app.notify.email import build_channel
from stream_app.notify.email.lookup import HttpLookup, Recipient, SqlLookup
from tests.integration.test_notify_email_smtp import Recorder, needs_reauth, smtp_server
from tests.support.infra import free_port

ALICE, BOB, CAROL, NOBODY = (uuid.uuid4() for _ in range(4))
ALICE_AT = "alice@example.org"
BEARER = "lookup-bearer-Zk4Tq8Wn2Hc6"
Answer = Callable[[], web.StreamResponse | None]  # None: no answer for the user (404)
ONE_COLUMN = "SELECT email FROM users WHERE id = :user_id"
TWO_COLUMNS = "SELECT email, name FROM users WHERE id = CAST(:user_id AS uuid)"


@pytest.fixture(scope="module")
def users_database(module_database_url: str) -> str:
    """The product's database: the seed's users (uuid ids), with an email and a display name."""

    async def create() -> None:
        engine = create_async_engine(module_database_url)
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE users (id UUID PRIMARY KEY, email TEXT, name TEXT)"))
            await connection.execute(
                text("INSERT INTO users (id, email, name) VALUES (:a, 'alice@example.org', 'Alice'),"
                     " (:b, 'bob@example.org', NULL), (:c, NULL, 'Carol')"),
                {"a": ALICE, "b": BOB, "c": CAROL},
            )  # fmt: skip
        await engine.dispose()

    asyncio.run(create())
    return module_database_url


@pytest.fixture(autouse=True)
def _no_email_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("NOTIFY_EMAIL_"):
            monkeypatch.delenv(name)


async def test_sql_lookup_with_a_display_name(users_database: str) -> None:
    lookup = SqlLookup(TWO_COLUMNS, users_database, timeout_seconds=5)
    try:
        assert await lookup.find(ALICE) == Recipient("alice@example.org", "Alice")
        assert await lookup.find(BOB) == Recipient("bob@example.org", None)
        assert await lookup.find(CAROL) is None  # a NULL address
        assert await lookup.find(NOBODY) is None  # no row
    finally:
        await lookup.aclose()


async def test_sql_lookup_of_the_address_alone(users_database: str) -> None:
    lookup = SqlLookup(ONE_COLUMN, users_database, timeout_seconds=5)  # the uuid column compared to a text bind
    try:
        assert await lookup.find(ALICE) == Recipient("alice@example.org", None)
    finally:
        await lookup.aclose()


async def test_sql_lookup_on_sqlite_with_text_ids(tmp_path: Path) -> None:
    """The demo's shape: SQLite, ids stored as text."""
    path = tmp_path / "product.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT)")
        db.execute("INSERT INTO users VALUES (?, 'alice@example.org', 'Alice')", (str(ALICE),))
    lookup = SqlLookup(
        "SELECT email, name FROM users WHERE id = :user_id", f"sqlite+aiosqlite:///{path}", timeout_seconds=5
    )
    try:
        assert await lookup.find(ALICE) == Recipient("alice@example.org", "Alice")
    finally:
        await lookup.aclose()


async def test_an_unreachable_database_is_retried_without_its_password() -> None:
    url = f"postgresql+asyncpg://product:db-pw-Hn3Jx8@127.0.0.1:{free_port()}/product"
    lookup = SqlLookup(ONE_COLUMN, url, timeout_seconds=5)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await lookup.find(ALICE)
    finally:
        await lookup.aclose()
    assert not caught.value.permanent
    assert caught.value.reason.startswith("address lookup query failed (")
    assert "db-pw-Hn3Jx8" not in caught.value.reason and str(ALICE) not in caught.value.reason


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    with smtp_server(recorder) as port:
        yield recorder, port


def email_env(monkeypatch: pytest.MonkeyPatch, port: int, **env: str) -> None:
    base = {
        "NOTIFY_EMAIL_SMTP_HOST": "127.0.0.1",
        "NOTIFY_EMAIL_SMTP_PORT": str(port),
        "NOTIFY_EMAIL_SMTP_SECURITY": "none",
        "NOTIFY_EMAIL_FROM": "Token Service <noreply@tokens.example.com>",
    }
    for name, value in (base | env).items():
        monkeypatch.setenv(name, value)


async def test_the_sql_lookup_reads_the_notifiers_database_by_default(
    users_database: str, smtp: tuple[Recorder, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, port = smtp
    email_env(monkeypatch, port, NOTIFY_EMAIL_LOOKUP_SQL=TWO_COLUMNS)
    channel = build_channel(database_url=users_database)
    assert channel is not None
    await channel.send(replace(needs_reauth(), user_id=ALICE))
    await channel.aclose()
    [received] = recorder.received
    assert received.rcpt_tos == ["alice@example.org"]
    assert received.message()["To"] == "Alice <alice@example.org>"


async def test_the_sql_lookup_database_setting_wins(
    users_database: str, smtp: tuple[Recorder, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, port = smtp
    # Given as postgresql:// (no driver): the lookup adds asyncpg.
    plain = make_url(users_database).set(drivername="postgresql").render_as_string(hide_password=False)
    email_env(monkeypatch, port, NOTIFY_EMAIL_LOOKUP_SQL=ONE_COLUMN, NOTIFY_EMAIL_LOOKUP_DATABASE_URL=plain)
    channel = build_channel(database_url=f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/notifier")
    assert channel is not None
    await channel.send(replace(needs_reauth(), user_id=BOB))
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(replace(needs_reauth(), user_id=CAROL))
    await channel.aclose()
    assert caught.value.permanent and "no email address for the user" in caught.value.reason
    assert [r.rcpt_tos for r in recorder.received] == [["bob@example.org"]]


@dataclass
class Directory:
    """The product's user directory over HTTP: answers per user id, bearer token required."""

    answers: dict[str, web.StreamResponse] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    never: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if request.headers.get("Authorization") != f"Bearer {BEARER}":
            return web.json_response({"error": "unauthorized"}, status=401)
        user_id = request.match_info["user_id"]
        if user_id == "slow":
            await self.never.wait()
        return self.answers.get(user_id) or web.json_response({"error": "not found"}, status=404)


@pytest.fixture
async def directory() -> AsyncIterator[tuple[Directory, str]]:
    found = Directory()
    app = web.Application()
    app.router.add_get("/users/{user_id}", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield found, f"http://127.0.0.1:{port}/users/{{user_id}}"
    finally:
        found.never.set()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda: web.json_response({"email": "alice@example.org", "name": "Alice"}), Recipient(ALICE_AT, "Alice")),
        (lambda: web.json_response({"email": "bob@example.org"}), Recipient("bob@example.org", None)),
        (lambda: web.json_response({"email": None, "name": "Carol"}), None),
        (lambda: None, None),  # 404
    ],
    ids=["named", "unnamed", "null", "404"],
)  # fmt: skip
async def test_http_lookup_answers(
    directory: tuple[Directory, str], answer: object, expected: Recipient | None
) -> None:
    found, template = directory
    response = answer()
    if response is not None:
        found.answers[str(ALICE)] = response
    lookup = HttpLookup(template, bearer_token=BEARER, timeout_seconds=5)
    try:
        assert await lookup.find(ALICE) == expected
    finally:
        await lookup.aclose()
    assert found.requests == [f"/users/{ALICE}"]


@pytest.mark.parametrize(
    ("answer", "permanent", "says", "retry_after"),
    [
        (lambda: web.Response(status=503, headers={"Retry-After": "7"}), False, "answered HTTP 503", 7.0),
        (lambda: web.Response(status=500), False, "answered HTTP 500", None),
        (lambda: web.Response(status=429, headers={"Retry-After": "3"}), False, "answered HTTP 429", 3.0),
        (lambda: web.Response(status=403), True, "answered HTTP 403", None),
        (lambda: web.Response(status=302, headers={"Location": "/x"}), True, "redirects are not followed", None),
        (lambda: web.Response(text="<html>down</html>", content_type="text/html"), False, "other than JSON", None),
        (lambda: web.json_response({"email": ["a@b.c"]}), True, "not a string", None),
    ],
    ids=["503", "500", "429", "403", "302", "html", "list"],
)  # fmt: skip
async def test_http_lookup_failures(
    directory: tuple[Directory, str], answer: Answer, permanent: bool, says: str, retry_after: float | None
) -> None:
    found, template = directory
    response = answer()
    assert response is not None
    found.answers[str(ALICE)] = response
    lookup = HttpLookup(template, bearer_token=BEARER, timeout_seconds=5)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await lookup.find(ALICE)
    finally:
        await lookup.aclose()
    assert (caught.value.permanent, caught.value.retry_after) == (permanent, retry_after)
    assert says in caught.value.reason and BEARER not in caught.value.reason


async def test_http_lookup_without_the_bearer_token_is_refused(directory: tuple[Directory, str]) -> None:
    _, template = directory
    lookup = HttpLookup(template, bearer_token=None, timeout_seconds=5)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await lookup.find(ALICE)
    finally:
        await lookup.aclose()
    assert caught.value.permanent and "answered HTTP 401" in caught.value.reason


async def test_http_lookup_timeouts_and_a_down_service_are_retried(directory: tuple[Directory, str]) -> None:
    _, template = directory
    slow = HttpLookup(template.replace("{user_id}", "slow"), bearer_token=BEARER, timeout_seconds=0.2)
    down = HttpLookup(f"http://127.0.0.1:{free_port()}/users/{{user_id}}", bearer_token=BEARER, timeout_seconds=5)
    try:
        with pytest.raises(DeliveryFailed) as timed_out:
            await slow.find(ALICE)
        with pytest.raises(DeliveryFailed) as refused:
            await down.find(ALICE)
    finally:
        await slow.aclose()
        await down.aclose()
    assert not timed_out.value.permanent and timed_out.value.reason == "address lookup unreachable (ReadTimeout)"
    assert not refused.value.permanent and refused.value.reason == "address lookup unreachable (ConnectError)"


async def test_the_channel_built_with_the_http_lookup_sends(
    directory: tuple[Directory, str], smtp: tuple[Recorder, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    found, template = directory
    recorder, port = smtp
    found.answers[str(ALICE)] = web.json_response({"email": "alice@example.org", "name": "Alice"})
    email_env(monkeypatch, port, NOTIFY_EMAIL_LOOKUP_URL=template, NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN=BEARER)
    channel = build_channel(database_url="sqlite+aiosqlite:///:memory:")
    assert channel is not None
    await channel.send(replace(needs_reauth("twitch"), user_id=ALICE))
    await channel.aclose()
    [received] = recorder.received
    assert received.message()["Subject"] == "Reconnect your Twitch account"
    assert BEARER.encode() not in recorder.everything()
