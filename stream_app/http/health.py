"""GET /healthz (the process answers) and GET /readyz (it can do its work: 503 naming each
check that fails)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from stream_app.db import Database
from stream_app.db.migrate import head_revision
from stream_app.http.probe import WorkerProbe

router = APIRouter(tags=["health"])

DATABASE_CHECK_SECONDS = 2.0


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


class Liveness(BaseModel):
    alive: bool


@router.get("/healthz", response_model=Liveness, summary="The process is alive")
async def healthz() -> Liveness:
    return Liveness(alive=True)


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Ready to work: consumer groups joined, database answering at the migrations' head, no stuck circuit",
    responses={503: {"model": Readiness, "description": "Not ready; the failing checks say why"}},
)
async def readyz(request: Request) -> JSONResponse:
    readiness = await request.app.state.readiness.check()
    return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)


class ReadinessChecks:
    """Probes that arrive while a check is running share its answer: however many probes hang
    on a slow database, the checks hold one pooled connection (taken through the Database's
    gate, like every other session) for DATABASE_CHECK_SECONDS at most."""

    def __init__(self, database: Database, probe: WorkerProbe | None) -> None:
        self._database = database
        self._probe = probe
        self._running: asyncio.Task[Readiness] | None = None

    async def check(self) -> Readiness:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(check_readiness(self._database, self._probe))
        return await asyncio.shield(self._running)


async def check_readiness(database: Database, probe: WorkerProbe | None) -> Readiness:
    checks = await _database_checks(database)
    if probe is not None:
        checks |= _worker_checks(probe)
    return Readiness(ready=all(check.ok for check in checks.values()), checks=checks)


async def _database_checks(database: Database) -> dict[str, Check]:
    """The database answers (`SELECT 1`) and is at the migrations' head, within
    DATABASE_CHECK_SECONDS; on Postgres a lock on alembic_version (a migration under way) is
    waited for half a second at most."""
    started = time.monotonic()
    answered = False
    try:
        async with asyncio.timeout(DATABASE_CHECK_SECONDS), database.transaction() as session:
            if not database.is_sqlite:
                await session.execute(text("SET LOCAL lock_timeout = '500ms'"))
            await session.execute(text("SELECT 1"))
            answered = True
            current = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except Exception as exc:  # whatever the driver raises; its message may quote the URL
        why = f"no answer within {DATABASE_CHECK_SECONDS:g}s" if isinstance(exc, TimeoutError) else type(exc).__name__
        database_check = Check(ok=answered, detail="answered" if answered else f"unreachable ({why})")
        migrations = Check(ok=False, detail=f"revision unreadable ({why})" if answered else "database unreachable")
        return {"database": database_check, "migrations": migrations}
    head = head_revision()
    database_check = Check(ok=True, detail=f"answered in {1000 * (time.monotonic() - started):.0f} ms")
    if current != head:
        detail = f"at {current or 'no revision'}, head is {head}: run `token-refresh migrate`"
        return {"database": database_check, "migrations": Check(ok=False, detail=detail)}
    return {"database": database_check, "migrations": Check(ok=True, detail=f"at head ({head})")}


def _worker_checks(probe: WorkerProbe) -> dict[str, Check]:
    groups = probe.consumer_groups()
    waiting = sorted(group for group, joined in groups.items() if not joined)
    stuck = probe.stuck_circuits()
    unknown = probe.unknown_key_ids()
    return {
        "consumer_groups": Check(
            ok=bool(groups) and not waiting,
            detail=f"not joined yet: {', '.join(waiting)}" if waiting else f"joined: {', '.join(sorted(groups))}",
        ),
        "circuits": Check(
            ok=not stuck,
            detail=f"open past their cool-down: {', '.join(stuck)}" if stuck else "none stuck open",
        ),
        "encryption_keys": Check(
            ok=not unknown,
            detail=f"rows under key ids not configured here: {', '.join(unknown)}" if unknown else "all known",
        ),
    }
