"""Wire format of the token refresh service: the events on its Kafka topics.

This package imports nothing of the service, so producers, notifiers and auditors
can depend on it alone.
"""

from schemas.bound_tokens import encrypt_bound_token
from schemas.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    ConnectionCreated,
    ConnectionDisconnected,
    DeadLetter,
    Event,
    ProviderCircuitChanged,
    RefreshReason,
    TokenExpiring,
    TokenNeedsReauth,
    TokenRefreshed,
    TokenRefreshFailed,
    TokenRevoked,
    connection_key,
)
from schemas.signing import canonical_bytes, sign_event

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "ConnectionCreated",
    "ConnectionDisconnected",
    "DeadLetter",
    "Event",
    "ProviderCircuitChanged",
    "RefreshReason",
    "TokenExpiring",
    "TokenNeedsReauth",
    "TokenRefreshFailed",
    "TokenRefreshed",
    "TokenRevoked",
    "canonical_bytes",
    "connection_key",
    "encrypt_bound_token",
    "sign_event",
]
