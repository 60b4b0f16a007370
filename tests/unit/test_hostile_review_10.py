"""Hostile review of issue 10 (the operator's surface): defects shown without a database.

Each test failed on the code reviewed (commit 964894e and before) and guards the fix that
followed (e9062c9)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from stream_app.bulk import BulkSettings, JobStatus
from stream_app.bulk import store as bulk_store
from stream_app.bulk.command import EXIT_USAGE, BulkRefreshRequest, run_bulk_refresh
from stream_app.bulk.runner import BulkRunner
from stream_app.bulk.selector import BulkSelector
from stream_app.bulk.store import ClaimedJob
from stream_app.engine import RefreshResult
from stream_app.settings import load_settings

OVERFLOWING = "99999999999999999999"


def test_an_overflowing_duration_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        BulkSelector(expiring_within=OVERFLOWING)


def test_every_accepted_selector_can_be_evaluated() -> None:
    try:
        selector = BulkSelector(expiring_within="3000000d")
    except ValidationError:
        return  # refused up front: fixed
    selector.conditions(datetime.now(UTC).replace(tzinfo=None))


def test_bulk_refresh_cli_refuses_an_overflowing_duration_in_one_line(
    encryption_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        encryption_key=encryption_key,
        # Never reached: the selector is checked before the database is asked anything.
        database_url="postgresql+asyncpg://nobody:nothing@127.0.0.1:1/none",
    )
    code = run_bulk_refresh(settings, BulkRefreshRequest(expiring_within=OVERFLOWING, detach=True))
    assert code == EXIT_USAGE
    assert "expiring" in capsys.readouterr().err


def _claimed(**overrides: Any) -> ClaimedJob:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "selector": BulkSelector(),
        "dry_run": True,
        "rate_per_platform": 10.0,
        "created_at": datetime.now(UTC).replace(tzinfo=None),
        "total": None,
        "done": 0,
        "counts": {},
        "cursor": {},
        "pages": {},
        "cancel_requested": False,
        "attempts": 1,
    }
    return ClaimedJob(**(fields | overrides))


async def _never(_user: uuid.UUID, _platform: str) -> RefreshResult:
    raise AssertionError("nothing is refreshed here")


@pytest.mark.parametrize(
    "job",
    [
        {"dry_run": False},  # a walk that ends: finished as succeeded
        {"cancel_requested": True},  # a job cancelled before it was taken
        {"dry_run": False, "selector": BulkSelector(last_error_class="x"), "attempts": 99},  # given up
    ],
    ids=["succeeding", "cancelling", "giving-up"],
)
async def test_a_database_error_at_a_jobs_end_does_not_escape_the_runner(
    monkeypatch: pytest.MonkeyPatch, job: dict[str, Any]
) -> None:
    finished: list[JobStatus] = []

    async def claim(*_args: Any) -> ClaimedJob:
        return _claimed(**job)

    async def no_matches(*_args: Any) -> dict[str, dict[str, int]]:
        if job.get("attempts"):
            raise ConnectionResetError("the database went away")  # the run fails, at its last attempt
        return {}

    async def started(*_args: Any, **_kwargs: Any) -> None:
        return None

    async def finish(_db: Any, _job_id: Any, _owner: Any, status: JobStatus, **_values: Any) -> None:
        finished.append(status)
        raise ConnectionResetError("the database went away (a failover)")

    async def release(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(bulk_store, "claim_job", claim)
    monkeypatch.setattr(bulk_store, "count_matches", no_matches)
    monkeypatch.setattr(bulk_store, "record_start", started)
    monkeypatch.setattr(bulk_store, "finish", finish)
    monkeypatch.setattr(bulk_store, "release", release)
    monkeypatch.setattr(bulk_store, "save_progress", lambda *_a, **_k: started())
    runner = BulkRunner(None, _never, BulkSettings.defaults(), owner="hostile-review")  # type: ignore[arg-type]

    assert await runner.run_once()  # raises ConnectionResetError today
    assert finished  # the runner did reach the job's end
