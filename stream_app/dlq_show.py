"""Showing a dead-letter topic to an operator (``token-refresh dlq show TOPIC``).

One line per dead letter: the record's position, when it was dead-lettered, its key (in the
service's own shape only, else its size), the reason, a redacted view of its value
(stream_app/redacted_view.py) and its headers' value sizes (names of the signature headers only),
opened with the configured keys. The value and the header values are never printed, and every
field is made printable (a forged letter's escape sequences do not reach the terminal).
Reads without a consumer group: replay positions are untouched.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from pydantic import ValidationError

from schemas import DeadLetter
from schemas.signing import KEY_ID_HEADER, SIGNATURE_HEADER
from stream_app.kafka_client import cap_client_logging, client_options, existing_partitions
from stream_app.redacted_view import printable, redacted_view
from stream_app.sealed_letters import LetterSeal, UnsealError, readable_key
from stream_app.settings import Settings

_KNOWN_HEADERS = frozenset((KEY_ID_HEADER, SIGNATURE_HEADER))


async def show_dead_letters(settings: Settings, dlq_topic: str, limit: int | None = None) -> AsyncIterator[str]:
    """A line for each record of ``dlq_topic`` up to its end offsets now (at most ``limit``),
    partition by partition. Raises TokenRefreshError if the topic does not exist."""
    cap_client_logging()
    seal = LetterSeal.from_settings(settings)
    partitions = (await existing_partitions(settings, dlq_topic))[dlq_topic]
    # earliest, as the seek below means: an initial reset to the latest offset can land after
    # a seek to the beginning (aiokafka), which skips every record.
    consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        shown = 0
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    if record.offset >= ends[tp]:
                        break
                    if limit is not None and shown >= limit:
                        return
                    shown += 1
                    yield describe(record, seal)
    finally:
        await consumer.stop()


def describe(record: ConsumerRecord, seal: LetterSeal) -> str:
    """One DLQ record as a line: position, time, key, reason, value view, headers (tab-separated)."""
    view = letter_view(record.value, seal)
    if view is None:
        size = len(record.value or b"")
        return f"{printable(record.topic)}[{record.partition}]@{record.offset}\tnot a dead letter ({size} bytes)"
    fields = (
        view["position"],
        view["occurred_at"],
        f"key={_key_field(view['key'])}",
        f"reason={json.dumps(view['reason'])}",
        f"value={view['value']}",
        f"headers={view['headers']}",
    )
    return "\t".join(printable(str(field)) for field in fields)


def letter_view(value: bytes | None, seal: LetterSeal) -> dict[str, str | None] | None:
    """What may be shown of a dead letter (None if ``value`` is not one): the dead-lettered
    record's position, when, its key (``_key_view``), the reason, the redacted value and the
    headers' sizes. Not yet made printable."""
    try:
        dead = DeadLetter.model_validate_json(value or b"")
    except ValidationError:
        return None
    return {
        "position": f"{dead.topic}[{dead.partition}]@{dead.offset}",
        "occurred_at": dead.occurred_at.isoformat(),
        "key": _key_view(dead),
        "reason": dead.reason,
        "value": _value_view(dead, seal),
        "headers": _headers_view(dead, seal),
    }


def _key_view(dead: DeadLetter) -> str | None:
    """The key in the service's own shape; any other only by its size (letters of earlier
    versions, and forged ones, may hold any key here); None when the record had none."""
    if readable_key(dead.key) is not None:
        return dead.key
    size = dead.key_size if dead.key is None else len(dead.key.encode("utf-8", errors="surrogatepass"))
    return None if size is None else f"<key, {size} bytes>"


def _key_field(key: str | None) -> str:
    """The key as ``describe`` writes it: JSON when readable, else its size or null."""
    if key is None:
        return "null"
    return json.dumps(key) if readable_key(key) is not None else key


def _value_view(dead: DeadLetter, seal: LetterSeal) -> str:
    if dead.value_omitted:
        return f"omitted ({dead.value_size} bytes; read it at its position if still retained)"
    if dead.sealed_key_id is not None:
        try:
            return redacted_view(seal.unseal(dead))
        except UnsealError as exc:
            return f"sealed, not opened: {exc}"
    try:  # a dead letter of an earlier version
        legacy = base64.b64decode(dead.value_base64, validate=True)
    except binascii.Error:
        return "unreadable (value_base64 is not base64)"
    return redacted_view(legacy) + (" (rewritten by an earlier version)" if dead.redacted else "")


def _headers_view(dead: DeadLetter, seal: LetterSeal) -> str:
    """The headers as a JSON list of [name, value size] (null for a null value): the signature
    headers' names, any other as its length (a producer may put a token in a name)."""
    if dead.value_omitted:
        return "not kept (read back with the record)"
    if dead.sealed_key_id is None or not dead.sealed_headers:
        return "not kept (a dead letter of an earlier version)"
    try:
        headers = seal.unseal_headers(dead) or []
    except UnsealError as exc:
        return f"sealed, not opened: {exc}"
    return json.dumps([[_header_name(name), None if value is None else len(value)] for name, value in headers])


def _header_name(name: str) -> str:
    return name if name in _KNOWN_HEADERS else f"<name, {len(name)} chars>"
