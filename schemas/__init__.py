"""Wire format of the token refresh service: the events on its Kafka topics.

This package imports nothing of the service, so producers, notifiers and auditors
can depend on it alone.
"""

from schemas.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    ConnectionCreated,
    DeadLetter,
    Event,
    RefreshReason,
    TokenExpiring,
    TokenNeedsReauth,
    TokenRefreshed,
    TokenRefreshFailed,
    connection_key,
)

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "ConnectionCreated",
    "DeadLetter",
    "Event",
    "RefreshReason",
    "TokenExpiring",
    "TokenNeedsReauth",
    "TokenRefreshFailed",
    "TokenRefreshed",
    "connection_key",
]
