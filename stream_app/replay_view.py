"""What ``token-refresh replay`` shows of a record, and which records its filters keep.

Fail closed, as ``dlq show`` is: a record's value is shown decoded only when it is a valid
event of a known type (its tokens are then ciphertexts, and fields outside the schema are
dropped); anything else, a non-JSON value included, is shown as the redacted view
(stream_app/redacted_view.py). A dead letter is shown as ``dlq show`` shows it: its value only
unsealed and redacted. A key is shown only in the service's own shape ``<user_id>:<platform>``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from schemas.events import EVENT_TYPES, Event, ProviderCircuitChanged
from stream_app.dlq_show import letter_view
from stream_app.privacy import UserIdHasher
from stream_app.redacted_view import redacted_view
from stream_app.sealed_letters import LetterSeal, readable_key

_HASHED_USER_ID = re.compile(r"[0-9a-f]{8}")
# Every event the service publishes: connections' events, and the workers' circuit changes.
_MODELS: dict[str, type[Event] | type[ProviderCircuitChanged]] = {
    **EVENT_TYPES,
    ProviderCircuitChanged.default_topic: ProviderCircuitChanged,
}


@dataclass(frozen=True)
class RecordView:
    """One record as printed: ``fields`` is the JSON object of a jsonl line."""

    fields: dict[str, Any]
    user_id: uuid.UUID | None
    platform: str | None


def view_record(record: ConsumerRecord, seal: LetterSeal | None) -> RecordView:
    """``seal`` (the dead-letter keys) is given for a dead-letter topic, None for any other."""
    key = readable_key(record.key)
    fields: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": _rfc3339(record.timestamp),
        "key": key if key is not None or record.key is None else f"<key, {len(record.key)} bytes>",
    }
    user_id, platform = _connection(key)
    if seal is not None:
        letter = letter_view(record.value, seal)
        if letter is None:
            fields["redacted"] = f"not a dead letter, {len(record.value or b'')} bytes"
        else:
            fields["dead_letter"] = letter
            user_id, platform = _connection(letter["key"])
        return RecordView(fields, user_id, platform)
    event, problem = _event(record.value)
    if event is None:
        fields["value"] = None
        fields["redacted"] = redacted_view(record.value) if record.value is not None else "no value"
        fields["problem"] = problem
        return RecordView(fields, user_id, platform)
    fields["value"] = event.model_dump(mode="json")
    return RecordView(fields, getattr(event, "user_id", None), event.platform)


def _event(value: bytes | None) -> tuple[Event | ProviderCircuitChanged | None, str]:
    """The value as a valid event of its ``event_type``, else (None, why not: words of ours)."""
    if value is None:
        return None, "no value (a tombstone)"
    try:
        decoded = json.loads(value)
    except Exception:  # invalid JSON or UTF-8, nesting deeper than the stack ...
        return None, "not JSON"
    event_type = decoded.get("event_type") if isinstance(decoded, dict) else None
    model = _MODELS.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        return None, "not an event of a known event_type"
    try:
        return model.model_validate(decoded), ""
    except ValidationError as exc:
        names = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]} & set(model.model_fields))
        return None, f"not a valid {model.default_topic} event ({', '.join(names) or 'the whole value'})"
    except Exception:  # a validator's own failure (e.g. OverflowError converting a date)
        return None, f"not a valid {model.default_topic} event"


def _connection(key: str | None) -> tuple[uuid.UUID | None, str | None]:
    if key is None or readable_key(key) is None:
        return None, None
    user_id, _, platform = key.partition(":")
    return uuid.UUID(user_id), platform


def _rfc3339(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RecordFilter:
    """--platform and --user: the user as a UUID (any spelling) or as the 8-hex keyed hash that
    stands for it in the service's logs."""

    def __init__(self, platform: str | None, user: str | None, hasher: UserIdHasher) -> None:
        self._platform = platform
        self._user_id: uuid.UUID | None = None
        self._user_hash: str | None = None
        self._hasher = hasher
        if user is not None:
            try:
                self._user_id = uuid.UUID(user)
            except ValueError:
                if not _HASHED_USER_ID.fullmatch(user.lower()):
                    raise ValueError("--user: neither a UUID nor an 8-hex user hash (as in the logs)") from None
                self._user_hash = user.lower()

    def keeps(self, view: RecordView) -> bool:
        if self._platform is not None and view.platform != self._platform:
            return False
        if self._user_id is not None and view.user_id != self._user_id:
            return False
        return self._user_hash is None or (view.user_id is not None and self._hasher(view.user_id) == self._user_hash)
