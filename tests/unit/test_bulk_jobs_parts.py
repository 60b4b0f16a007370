"""The pure parts of bulk refresh jobs: the selector, the progress kept in id order, the pacer."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from stream_app.bulk import BulkSelector
from stream_app.bulk.runner import Pacer, Progress


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5h", 5400), ("PT1H", 3600), (30, 30)],
)
def test_expiring_within_reads_the_usual_durations(given: object, seconds: float) -> None:
    selector = BulkSelector.model_validate({"expiring_within": given})
    assert selector.expiring_within == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "fields",
    [
        {"expiring_within": "soon"},
        {"expiring_within": "0s"},
        {"platform": "github"},  # never refreshed: a personal access token
        {"platform": "myspace"},
        {"statuses": []},
        {"statuses": ["needs_reauth"]},
        {"last_error_class": "Invalid Client"},
        {"last_error_class": "x" * 65},
        {"other": 1},
    ],
)
def test_a_selector_refuses_what_could_select_nothing_sensible(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BulkSelector.model_validate(fields)


def test_statuses_default_to_every_refreshable_one_and_are_deduplicated_in_order() -> None:
    assert BulkSelector().statuses == ["connected", "token_expired", "error"]
    assert BulkSelector(statuses=["error", "connected", "error"]).statuses == ["connected", "error"]


def test_a_selector_survives_its_round_trip_through_the_jobs_table() -> None:
    selector = BulkSelector(platform="spotify", statuses=["error"], expiring_within="2h", last_error_class="a_b")
    assert BulkSelector.model_validate(selector.model_dump(mode="json")) == selector


def test_an_error_class_matches_as_a_prefix_code_with_like_wildcards_escaped() -> None:
    condition = str(BulkSelector(last_error_class="invalid_client").conditions(datetime(2026, 1, 1))[-1])
    assert "LIKE" in condition and "ESCAPE" in condition


def test_progress_counts_and_moves_the_cursor_only_through_what_is_done_in_id_order() -> None:
    progress = Progress(done=0, counts={}, cursor={}, pages={})
    ids = sorted(uuid.uuid4() for _ in range(3))
    entries = [progress.started("spotify", connection_id) for connection_id in ids]
    progress.finished("spotify", entries[1], "refreshed")  # out of order: nothing saved yet
    assert (progress.done, progress.counts, progress.cursor) == (0, {}, {})
    progress.finished("spotify", entries[0], "failed")
    assert (progress.done, progress.counts, progress.cursor) == (
        2,
        {"failed": 1, "refreshed": 1},
        {"spotify": str(ids[1])},
    )


def test_a_resumed_run_goes_again_through_the_rest_of_the_page_it_stopped_in() -> None:
    ids = sorted(uuid.uuid4() for _ in range(4))
    progress = Progress(done=2, counts={}, cursor={"spotify": str(ids[1])}, pages={"spotify": [str(i) for i in ids]})
    assert progress.carried_page("spotify") == ids[2:]
    assert progress.carried_page("discord") == []


async def test_the_pacer_spaces_its_starts_by_the_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        await pacer.wait()
    assert slept == [0.25, 0.25, 0.25, 0.25]
    now[0] += 10  # idle for a while: no burst is saved up
    await pacer.wait()
    await pacer.wait()
    assert slept[4:] == [0.25]
