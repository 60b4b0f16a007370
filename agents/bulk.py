"""Bulk refresh jobs: every worker runs one job at a time when there is one (the job's lease
keeps two workers off the same job)."""

from __future__ import annotations

import os
import socket
import uuid

from agents.context import WorkerContext
from stream_app.bulk.runner import BULK_TRIGGER, BulkRunner
from stream_app.bulk.settings import BulkSettings
from stream_app.engine import RefreshResult


def attach(context: WorkerContext) -> None:
    engine = context.service.engine

    async def refresh(user_id: uuid.UUID, platform: str) -> RefreshResult:
        return await engine.refresh(user_id, platform, trigger=BULK_TRIGGER)

    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    runner = BulkRunner(context.service.database, refresh, BulkSettings.from_settings(context.settings), owner)

    @context.app.task
    async def bulk_refresh_jobs() -> None:
        await runner.run_forever()
