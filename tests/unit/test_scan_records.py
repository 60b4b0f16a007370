"""The scan's cheap paths are exact: its records are the pydantic events' bytes, and the
publisher's partitioner is aiokafka's (and the Java client's) default one."""

from __future__ import annotations

import json
import os
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from schemas import TokenExpiring
from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.db.scan import DueConnection
from stream_app.publisher import OutgoingRecord, murmur2, partition_by_key
from stream_app.scheduler import RequestPage


def due_rows(rng: random.Random, count: int) -> list[DueConnection]:
    """Rows as the database returns them: naive UTC times, some with no expiry, some whole
    seconds (isoformat and pydantic leave the fraction out then)."""
    rows = []
    for index in range(count):
        expires = datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(10**9))
        if index % 3 == 0:
            expires = expires.replace(microsecond=0)
        elif index % 3 == 1:
            expires = expires.replace(microsecond=rng.choice([1, 10, 120000, 999999, rng.randrange(10**6)]))
        rows.append(
            DueConnection(
                id=uuid.uuid4(),
                user_id=uuid.UUID(int=rng.getrandbits(128)),
                platform=rng.choice(REFRESHABLE_PLATFORMS),
                token_expires_at=None if index % 7 == 0 else expires,
                refresh_due_at=expires,
                requested_at=None,
            )
        )
    return rows


@pytest.mark.parametrize("occurred_at", [datetime.now(UTC), datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)])
def test_the_records_are_the_events_bytes(occurred_at: datetime) -> None:
    page = RequestPage(due_rows(random.Random(7), 500), occurred_at)
    events = page.events()

    assert page.records("token.expiring") == [
        OutgoingRecord("token.expiring", event.key.encode(), event.to_bytes()) for event in events
    ]
    # The events are valid ones, each its own, for the rows in order.
    assert [event.user_id for event in events] == [row.user_id for row in page.rows]
    assert len({event.event_id for event in events}) == len(events)
    assert all(event.event_id.version == 4 for event in events)
    assert all(TokenExpiring.model_validate_json(event.to_bytes()) == event for event in events)


def test_the_records_parse_back_to_the_rows() -> None:
    rows = due_rows(random.Random(8), 50)
    for record, row in zip(RequestPage(rows, datetime.now(UTC)).records("t"), rows, strict=True):
        parsed = json.loads(record.value)
        assert record.key == f"{row.user_id}:{row.platform}".encode()
        assert parsed["user_id"] == str(row.user_id) and parsed["reason"] == "scheduled"
        expires = row.token_expires_at
        assert parsed["token_expires_at"] == (None if expires is None else expires.isoformat() + "Z")


# Apache Kafka's own test vectors (UtilsTest.testMurmur2; Java ints, here unsigned).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_is_the_java_clients() -> None:
    assert {key: murmur2(key) for key in JAVA_MURMUR2} == {key: h & 0xFFFFFFFF for key, h in JAVA_MURMUR2.items()}
    rng = random.Random(9)
    keys = [os.urandom(length) for length in range(0, 300) for _ in range(5)]
    keys += [f"{uuid.UUID(int=rng.getrandbits(128))}:{platform}".encode() for platform in REFRESHABLE_PLATFORMS]
    assert [murmur2(key) for key in keys] == [aiokafka_murmur2(key) for key in keys]


@pytest.mark.parametrize("partitions", [1, 3, 4, 8, 12])
def test_keys_go_to_the_partition_the_default_partitioner_picks(partitions: int) -> None:
    everything = list(range(partitions))
    keys = [f"{uuid.uuid4()}:spotify".encode() for _ in range(2000)]
    default = DefaultPartitioner()
    assert [partition_by_key(key, everything, everything) for key in keys] == [
        default(key, everything, everything) for key in keys
    ]
