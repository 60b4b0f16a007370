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
from stream_app.db.migrate import current_revision, head_revision
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
    readiness = await check_readiness(request.app.state.database, request.app.state.probe)
    return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)


async def check_readiness(database: Database, probe: WorkerProbe | None) -> Readiness:
    checks = {"database": await _database(database)}
    checks["migrations"] = (
        await _migrations(database) if checks["database"].ok else Check(ok=False, detail="database unreachable")
    )
    if probe is not None:
        checks |= _worker_checks(probe)
    return Readiness(ready=all(check.ok for check in checks.values()), checks=checks)


async def _database(database: Database) -> Check:
    started = time.monotonic()
    try:
        async with asyncio.timeout(DATABASE_CHECK_SECONDS):
            async with database.sessions() as session:
                await session.execute(text("SELECT 1"))
    except TimeoutError:
        return Check(ok=False, detail=f"no answer within {DATABASE_CHECK_SECONDS:g}s")
    except Exception as exc:  # whatever the driver raises; its message may quote the URL
        return Check(ok=False, detail=f"unreachable ({type(exc).__name__})")
    return Check(ok=True, detail=f"answered in {1000 * (time.monotonic() - started):.0f} ms")


async def _migrations(database: Database) -> Check:
    try:
        current = await current_revision(database)
    except Exception as exc:
        return Check(ok=False, detail=f"revision unreadable ({type(exc).__name__})")
    head = head_revision()
    if current != head:
        return Check(ok=False, detail=f"at {current or 'no revision'}, head is {head}: run `token-refresh migrate`")
    return Check(ok=True, detail=f"at head ({head})")


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
