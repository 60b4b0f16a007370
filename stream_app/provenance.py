"""Where an input event comes from, and whether it may be believed (docs/security.md).

- ``occurred_at`` later than now plus EVENT_MAX_CLOCK_SKEW_SECONDS is refused: a future-dated
  `connection.created` would make every real re-connection before that date look stale.
- A producer signature (``schemas.signing``: headers ``signature-key-id`` and ``signature``)
  is verified whenever one is present, on either input topic, and refused when wrong or under
  an unknown key id; REQUIRE_SIGNED_CONNECTION_EVENTS refuses unsigned `connection.created`.
  `token.expiring` cannot require one: the service writes it itself, unsigned.
- REQUIRE_BOUND_INPUT_TOKENS refuses seed-format (unbound) ciphertexts in `connection.created`.
- ``manual`` and ``on_demand`` requests from the topic are rate-limited per connection
  (``stream_app.manual_limit``).

Every refusal is an InvalidEvent whose message (the dead-letter reason) names the field.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from faust.types import EventT

from schemas import ConnectionCreated, ConnectionDisconnected, TokenExpiring
from schemas.events import Event
from schemas.signing import KEY_ID_HEADER, SIGNATURE_HEADER, signature
from stream_app.ingest import InvalidEvent
from stream_app.manual_limit import LIMITED_REASONS, ManualRefreshLimit
from stream_app.settings import Settings

_SIGNATURE_HEADERS = (KEY_ID_HEADER, SIGNATURE_HEADER)


class Provenance:
    def __init__(self, settings: Settings) -> None:
        self._skew = timedelta(seconds=settings.event_max_clock_skew_seconds)
        self._keys = {key_id: secret.encode("utf-8") for key_id, secret in settings.signing_keys().items()}
        self._require_signed = settings.require_signed_connection_events
        self._require_bound = settings.require_bound_input_tokens

    def check_connection(self, event: ConnectionCreated, record: EventT[bytes]) -> None:
        """Raises InvalidEvent unless ``event`` (read from ``record``) may be believed."""
        self._check_signature(record, required=self._require_signed)
        self._check_time(event)
        if self._require_bound:
            for field, token in (("access_token", event.access_token), ("refresh_token", event.refresh_token)):
                if token is not None and not token.startswith("v2:"):
                    raise InvalidEvent(
                        f"{field}: an unbound (seed-format) ciphertext; REQUIRE_BOUND_INPUT_TOKENS requires "
                        "v2:<key id>:iv:authTag:ciphertext bound to this user, platform and field"
                    )

    def check_disconnection(self, event: ConnectionDisconnected, record: EventT[bytes]) -> None:
        """Believed as a `connection.created` is: a signature is checked whenever present and
        required under REQUIRE_SIGNED_CONNECTION_EVENTS (a forged one would revoke a user's
        grant), and a future ``occurred_at`` is refused (it would make every later
        re-connection look stale)."""
        self._check_signature(record, required=self._require_signed)
        self._check_time(event)

    def check_request(self, event: TokenExpiring, record: EventT[bytes]) -> None:
        """Raises InvalidEvent unless the refresh request may be believed (signatures optional)."""
        self._check_time(event)
        self._check_signature(record, required=False)

    def _check_time(self, event: Event) -> None:
        latest = datetime.now(UTC) + self._skew
        if event.occurred_at > latest:
            raise InvalidEvent(
                f"occurred_at: {event.occurred_at.isoformat()} is later than now plus "
                f"EVENT_MAX_CLOCK_SKEW_SECONDS ({self._skew.total_seconds():g} s)"
            )

    def _check_signature(self, record: EventT[bytes], *, required: bool) -> None:
        found = _signature_headers(record.message.headers)
        if not found:
            if required:
                raise InvalidEvent(
                    f"signature: unsigned (no {KEY_ID_HEADER} / {SIGNATURE_HEADER} header); "
                    "REQUIRE_SIGNED_CONNECTION_EVENTS is set"
                )
            return
        if any(len(found.get(name, ())) != 1 for name in _SIGNATURE_HEADERS):
            raise InvalidEvent(f"signature: needs exactly one {KEY_ID_HEADER} and one {SIGNATURE_HEADER} header")
        (key_id,) = found[KEY_ID_HEADER]
        (given,) = found[SIGNATURE_HEADER]
        secret = self._keys.get(key_id.decode("utf-8", "replace"))
        if secret is None:
            raise InvalidEvent("signature: unknown producer key id (not in PRODUCER_SIGNING_KEYS)")
        try:
            expected = signature(record.value or b"", secret)
        except Exception:  # invalid JSON, nesting deeper than the stack, a fraction ...
            raise InvalidEvent("signature: the value has no canonical form") from None
        if not hmac.compare_digest(expected.encode("ascii"), given):
            raise InvalidEvent("signature: does not match the event under its producer key")


class RequestAdmission:
    """What the refresh agent does with a `token.expiring` read from the topic: refuse it
    (InvalidEvent), take it as it is, or downgrade a schedule-skipping one over the limit."""

    def __init__(self, settings: Settings) -> None:
        self._provenance = Provenance(settings)
        self._limit = ManualRefreshLimit(settings.manual_refresh_min_interval_seconds)

    def admit(self, parsed: TokenExpiring | InvalidEvent, record: EventT[bytes]) -> TokenExpiring | InvalidEvent:
        if isinstance(parsed, InvalidEvent):
            return parsed
        try:
            self._provenance.check_request(parsed, record)
        except InvalidEvent as exc:
            return exc
        if parsed.reason in LIMITED_REASONS and not self._limit.allow(parsed.user_id, parsed.platform):
            return parsed.model_copy(update={"reason": "scheduled"})
        return parsed


def _signature_headers(headers: Any) -> dict[str, list[bytes]]:
    """The signature headers' values by name (a repeated header keeps every value)."""
    if not headers:
        return {}
    pairs: Iterable[tuple[Any, Any]] = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, list[bytes]] = {}
    for name, value in pairs:
        if name in _SIGNATURE_HEADERS:
            found.setdefault(name, []).append(value if isinstance(value, bytes) else b"")
    return found
