"""Which failures are the infrastructure's (wait, try the same work again) and which are the
work's own (retrying cannot help: report it, dead-letter the record).

A transient failure is retried until it succeeds, which holds the record, and so its
partition, until the broker or database is back: nothing is lost. Anything else must not be
retried forever, or one record would block its partition for good.
"""

from __future__ import annotations

from aiokafka.errors import KafkaError, KafkaTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# SQLSTATE classes of a server that cannot serve now, whatever the statement: connection
# exception, transaction rollback (serialization failure, deadlock), insufficient resources,
# operator intervention (shutdown, statement timeout), system error. Data exceptions (22),
# integrity violations (23), programming errors (42) ... would fail again the same way.
# (asyncpg's errors reach SQLAlchemy as plain DBAPIError, so the class alone does not tell.)
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_SQLSTATES = frozenset({"55P03"})  # lock_not_available (lock_timeout)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the infrastructure that the same work may not meet again."""
    if isinstance(exc, KafkaError):
        # KafkaTimeoutError (no broker took the record in time) says retriable=False, but a
        # broker that is down is the very case to wait for; MessageSizeTooLargeError, an
        # authorization failure, a closed producer ... are not.
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    if isinstance(exc, DBAPIError):
        return (
            exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError) or _transient_sqlstate(exc)
        )
    # PoolTimeoutError: no pooled connection came free in time. OSError covers TimeoutError,
    # which asyncio.TimeoutError is since Python 3.11.
    return isinstance(exc, PoolTimeoutError | OSError)


def _transient_sqlstate(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if not isinstance(code, str):
        return False
    return code[:2] in _TRANSIENT_SQLSTATE_CLASSES or code in _TRANSIENT_SQLSTATES
