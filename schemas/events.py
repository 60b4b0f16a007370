"""Pydantic models of every event on the service's topics (contract §2).

Every event shares an envelope (`event_id`, `event_type`, `schema_version`,
`occurred_at`, `user_id`, `platform`). Tokens only ever travel encrypted, in the
storage format `iv:authTag:ciphertext` (lower-case hex).

An input event (one the service consumes) is refused here, with a reason naming the field,
rather than by the database or a consumer further on: timestamps within 2000-2200, bounded
strings and lists, no control character in any string. Invalid UTF-8 and lone surrogates
(``"\\ud800"``) never get this far: the JSON parser refuses them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

SCHEMA_VERSION: Literal[1] = 1

RefreshReason = Literal["scheduled", "on_demand", "manual", "bulk"]

# The seed's ciphertext format: hex IV (12 or 16 bytes), hex 16-byte GCM tag, hex ciphertext;
# optionally prefixed by "v2:<8-hex key id>:" for a ciphertext bound to its connection and field.
ENCRYPTED_TOKEN_PATTERN = r"^(?:v2:[0-9a-f]{8}:)?(?:[0-9a-f]{24}|[0-9a-f]{32}):[0-9a-f]{32}:(?:[0-9a-f]{2})*$"
EncryptedToken = Annotated[str, StringConstraints(pattern=ENCRYPTED_TOKEN_PATTERN, max_length=64 * 1024)]
PlatformKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]

# Unicode's control characters (category Cc: C0, DEL, C1). PostgreSQL refuses NUL in text
# (SQLSTATE 22021); the others have no place in an identifier or a scope, and break log lines
# and consumers' parsers. Python and ECMA-262 read the pattern alike; the published schemas
# say `"not": {"pattern": ...}`, which needs no anchor (Python's `$` also matches before a
# final newline).
CONTROL_CHARACTER_PATTERN = r"[\u0000-\u001f\u007f-\u009f]"
_CONTROL_CHARACTER = re.compile(CONTROL_CHARACTER_PATTERN)
_NO_CONTROL_CHARACTER = Field(json_schema_extra={"not": {"pattern": CONTROL_CHARACTER_PATTERN}})
# An OAuth scope: the service stores a connection's scopes space-separated. (Input events
# refuse control characters in every string: InputEvent; this only publishes the rule.)
Scope = Annotated[str, StringConstraints(max_length=512), _NO_CONTROL_CHARACTER]
MAX_SCOPES = 256

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_OUT_OF_RANGE = "timestamp outside 2000-01-01 .. 2200-01-01"


def _plausible_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset (RFC 3339)")
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: no such moment in UTC
        raise ValueError(_OUT_OF_RANGE) from None
    if not _EARLIEST <= value < _LATEST:
        raise ValueError(_OUT_OF_RANGE)
    return value


Timestamp = Annotated[datetime, AfterValidator(_plausible_utc)]


def utc_now() -> datetime:
    return datetime.now(UTC)


def connection_key(user_id: uuid.UUID | str, platform: str) -> str:
    """The Kafka key of every event of one connection: ``"<user_id>:<platform>"``."""
    return f"{user_id}:{platform}"


class Event(BaseModel):
    """The envelope shared by every event."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    default_topic: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: Timestamp = Field(default_factory=utc_now)
    user_id: uuid.UUID
    platform: PlatformKey

    @property
    def key(self) -> str:
        return connection_key(self.user_id, self.platform)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class InputEvent(Event):
    """An event the service consumes: besides its own type, no field may hold a string with a
    control character, at any depth (a list's items included)."""

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_control_characters(cls, value: Any) -> Any:
        for text in _strings(value):
            found = _CONTROL_CHARACTER.search(text)
            if found is not None:
                raise ValueError(f"control character U+{ord(found.group()):04X} not allowed")
        return value


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value (keys included), without recursion: nesting is
    bounded only by the JSON parser."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())


class ConnectionCreated(InputEvent):
    """Published by the product's OAuth callback when a user connects a platform."""

    default_topic: ClassVar[str] = "connection.created"
    event_type: Literal["connection.created"] = "connection.created"
    access_token: EncryptedToken
    refresh_token: EncryptedToken | None
    token_expires_at: Timestamp | None
    scopes: list[Scope] | None = Field(default=None, max_length=MAX_SCOPES)


class TokenExpiring(InputEvent):
    """A request to refresh one connection (from the scheduler or a trigger)."""

    default_topic: ClassVar[str] = "token.expiring"
    event_type: Literal["token.expiring"] = "token.expiring"
    token_expires_at: Timestamp | None
    reason: RefreshReason = "scheduled"


class TokenRefreshed(Event):
    default_topic: ClassVar[str] = "token.refreshed"
    event_type: Literal["token.refreshed"] = "token.refreshed"
    token_expires_at: Timestamp | None
    expires_in: int | None
    attempts: int
    duration_ms: int
    refresh_token_rotated: bool
    reason: RefreshReason


class TokenNeedsReauth(Event):
    default_topic: ClassVar[str] = "token.needs_reauth"
    event_type: Literal["token.needs_reauth"] = "token.needs_reauth"
    reason: str
    error: str | None = None
    status: Literal["needs_reauth"] = "needs_reauth"


class TokenRefreshFailed(Event):
    default_topic: ClassVar[str] = "token.refresh_failed"
    event_type: Literal["token.refresh_failed"] = "token.refresh_failed"
    error_class: str
    error: str | None = None
    status: str
    will_retry: bool


DisconnectReason = Literal["user_request", "operator", "account_deleted", "security"]
# What became of a disconnected connection's tokens at the provider (RFC 7009).
RevocationOutcome = Literal[
    "revoked", "already_invalid", "failed", "unsupported", "unconfigured", "disabled", "no_token"
]


class ConnectionDisconnected(InputEvent):
    """Published by the product when a user disconnects a platform (or by an operator): the
    connection's status becomes ``disconnected``, it is never refreshed again, and its tokens are
    revoked at a provider that supports RFC 7009 (when enabled), then wiped. Only a later
    `connection.created` (by ``occurred_at``) connects it again."""

    default_topic: ClassVar[str] = "connection.disconnected"
    event_type: Literal["connection.disconnected"] = "connection.disconnected"
    reason: DisconnectReason = "user_request"


class TokenRevoked(Event):
    """What a disconnect came to: the connection is ``disconnected``; ``revocation`` says what the
    provider was told (``revoked``; ``already_invalid``: it no longer knew the token;
    ``failed``: see error_class and error, the tokens are kept sealed so that a later disconnect
    can revoke them again; ``unsupported``: the platform has no RFC 7009 endpoint;
    ``unconfigured``: its token URL is overridden (a sandbox, a proxy) and its revocation URL is
    not, so its tokens are not sent to the provider's real endpoint; ``disabled``:
    REVOKE_TOKENS_ON_DISCONNECT is off; ``no_token``: nothing was stored)."""

    default_topic: ClassVar[str] = "token.revoked"
    event_type: Literal["token.revoked"] = "token.revoked"
    status: Literal["disconnected"] = "disconnected"
    reason: DisconnectReason
    revocation: RevocationOutcome
    revoked_token_type: Literal["refresh_token", "access_token"] | None = Field(
        default=None, description="Which token was presented to the provider's revocation endpoint, if any."
    )
    tokens_wiped: bool = Field(description="Whether the stored tokens were deleted (kept sealed only on failure).")
    error_class: str | None = None
    error: str | None = Field(
        default=None, description="The provider's error code and a description of our own; never its free text."
    )
    disconnect_event_id: uuid.UUID = Field(description="The event_id of the connection.disconnected applied.")


class ProviderCircuitChanged(BaseModel):
    """One worker's circuit breaker for a platform opened (the provider failed most calls: that
    worker stops calling it for a cool-down) or closed again (a trial call succeeded).

    Circuits are per worker process, so each worker reports its own: ``worker`` names it. Not a
    connection's event: there is no ``user_id``, and the Kafka key is the platform's key.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    default_topic: ClassVar[str] = "provider.circuit_changed"

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: Literal["provider.circuit_changed"] = "provider.circuit_changed"
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: Timestamp = Field(default_factory=utc_now)
    platform: PlatformKey
    state: Literal["open", "closed"]
    worker: str = Field(max_length=200, description="The worker whose circuit changed (its host and process).")
    cool_down_seconds: float | None = Field(
        default=None, description="When open: how long that worker stops calling the provider before a trial call."
    )
    open_seconds: float | None = Field(default=None, description="When closed: how long the circuit was not closed.")

    @property
    def key(self) -> str:
        return self.platform

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class DeadLetter(BaseModel):
    """What the service writes to ``<topic>.dlq`` for an input it cannot process.

    The record's value is kept only sealed: AES-256-GCM under a dead-letter key derived from
    the service's encryption key (HKDF-SHA256, info ``token-refresh/dead-letter/v1``), named by
    ``sealed_key_id``, with the associated data ``token-refresh/dead-letter/v1|<topic>|<partition>|<offset>``.
    The record's headers are sealed alike (``sealed_headers``, same key, associated data
    ``token-refresh/dead-letter-headers/v1|<topic>|<partition>|<offset>``), and so is its key
    (``sealed_key``, ``token-refresh/dead-letter-key/v1|...``), so a replay re-sends the record
    exactly: value, key and headers. The key stays readable (``key``) only in the service's own
    shape ``<user_id>:<platform>``. Nothing else in a dead letter comes from the record, so nothing
    readable in it can be a token or a producer's secret.
    """

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None = Field(
        description="The record's key when it has the service's own shape <user_id>:<platform> (a canonical "
        "UUID, a known platform); null otherwise (no key, or one kept only sealed: key_size). Dead letters of "
        "earlier versions kept any key here."
    )
    key_size: int | None = Field(
        default=None,
        description="The record's key size in bytes; null when the record had no key (and in dead letters of "
        "earlier versions).",
    )
    sealed_key: str = Field(
        default="",
        description="The record's key sealed under sealed_key_id: base64 of nonce (12 bytes), ciphertext and tag "
        "(16 bytes); empty when the record had no key, in a minimal dead letter that could not seal it, and in "
        "dead letters of earlier versions.",
    )
    reason: str
    sealed_value: str = Field(
        default="",
        description="The record's value sealed: base64 of nonce (12 bytes), ciphertext and tag (16 bytes); "
        "empty when the value is not kept (value_omitted).",
    )
    sealed_key_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{8}$",
        description="The id of the dead-letter key that sealed the value, headers and key (not the encryption "
        "key's id).",
    )
    sealed_headers: str = Field(
        default="",
        description="The record's headers sealed under the same key as the value: base64 of nonce (12 bytes), "
        "ciphertext and tag (16 bytes) of the JSON list of [name, base64 value or null] pairs, in the "
        "record's order; empty when the value is not kept, and in dead letters of earlier versions.",
    )
    value_size: int = Field(default=0, description="The record's value size in bytes.")
    value_omitted: bool = Field(
        default=False,
        description="The value is not kept (too large for a dead letter, or it could not be sealed): "
        "it stays readable at its topic, partition and offset.",
    )
    occurred_at: datetime = Field(default_factory=utc_now)
    # Read from dead letters written before values were sealed; written empty (the defaults).
    value_base64: str = Field(
        default="",
        description="Dead letters of earlier versions only: the value in base64 (never written now).",
        json_schema_extra={"deprecated": True},
    )
    redacted: bool = Field(
        default=False,
        description="Dead letters of earlier versions only: value_base64 was rewritten, so it is not the "
        "record's value (never written now).",
        json_schema_extra={"deprecated": True},
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


EVENT_TYPES: dict[str, type[Event]] = {
    model.default_topic: model
    for model in (
        ConnectionCreated,
        TokenExpiring,
        TokenRefreshed,
        TokenNeedsReauth,
        TokenRefreshFailed,
        ConnectionDisconnected,
        TokenRevoked,
    )
}
