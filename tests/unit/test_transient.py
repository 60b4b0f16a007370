"""What counts as a failure of the infrastructure (retried, holding the record) and what is the
work's own (raised at once: retrying it forever would block a partition)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerClosed,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from stream_app.transient import is_transient


def postgres(sqlstate: str, *, invalidated: bool = False) -> DBAPIError:
    """An asyncpg error as SQLAlchemy wraps it: a plain DBAPIError that only its SQLSTATE explains."""
    orig = SimpleNamespace(sqlstate=sqlstate)
    return DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


TRANSIENT = {
    "broker unreachable": KafkaConnectionError(),
    "no broker took the record in time": KafkaTimeoutError(),
    "leader moved": NotLeaderForPartitionError(),
    "request timed out": RequestTimedOutError(),
    "topic not known yet": UnknownTopicOrPartitionError(),
    "database unreachable": OperationalError("SELECT 1", {}, Exception()),
    "connection closed": InterfaceError("SELECT 1", {}, Exception()),
    "connection invalidated": postgres("XX000", invalidated=True),
    "connection failure": postgres("08006"),
    "serialization failure": postgres("40001"),
    "deadlock": postgres("40P01"),
    "too many connections": postgres("53300"),
    "admin shutdown": postgres("57P01"),
    "statement timeout": postgres("57014"),
    "lock timeout": postgres("55P03"),
    "pool checkout timeout": PoolTimeoutError(),
    "connection refused": ConnectionRefusedError(),
    "timeout": TimeoutError(),
}
PERMANENT = {
    "record too large": MessageSizeTooLargeError(),
    "topic forbidden": TopicAuthorizationFailedError(),
    "producer closed": ProducerClosed(),
    "integrity": IntegrityError("INSERT", {}, Exception()),
    "data": DataError("INSERT", {}, Exception()),
    "programming": ProgrammingError("SELECT", {}, Exception()),
    "NUL byte in text": postgres("22021"),
    "unique violation": postgres("23505"),
    "no SQLSTATE": DBAPIError("SELECT 1", {}, Exception()),
    "bug": ValueError(),
    "recursion": RecursionError(),
}


@pytest.mark.parametrize("exc", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_failures_of_the_infrastructure_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT.values(), ids=PERMANENT.keys())
def test_failures_that_would_happen_again_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)
