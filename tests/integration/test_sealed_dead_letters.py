"""End to end on the real broker: records with plain-text tokens in the shapes that used to leak,
and in their keys, land in `connection.created.dlq` with nothing readable; `dlq show` prints a
redacted view; and `dlq replay` after a fix sends back the original bytes under the original keys."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import DeadLetter
from stream_app.crypto import TokenCipher, generate_key
from stream_app.dlq_replay import replay_dead_letters
from stream_app.sealed_letters import LetterSeal, UnsealError
from stream_app.settings import load_settings
from tests.integration.conftest import Stack
from tests.support.dead_letters import readable_markers
from tests.support.kafka import TopicReader, produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _shapes(marker: str) -> dict[str, str]:
    """Six records with plain-text tokens (``marker`` + shape) that the worker dead-letters."""
    envelope = {
        "event_id": str(uuid.uuid4()),
        "event_type": "connection.created",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": str(uuid.uuid4()),
        "platform": "spotify",
    }
    head = json.dumps(envelope)[:-1]
    other_key = TokenCipher(generate_key()).encrypt("under another key")
    return {
        "camelCase": json.dumps(envelope | {"accessToken": f"{marker}camel", "refreshToken": f"{marker}rcamel"}),
        "nested": json.dumps(envelope | {"data": {"credentials": {"token": f"{marker}nested"}}}),
        "in a list": json.dumps(envelope | {"tokens": [f"{marker}list"]}),
        "invalid JSON": f'{head}, "credential": "{marker}broken",}}',
        "in scopes": json.dumps(envelope | {"scopes": ["read", f"{marker}scope"]}),
        "duplicate names": f'{head}, "access_token": "{other_key}", '
        f'"accessToken": "{marker}dup", "accessToken": "{other_key}"}}',
    }


async def test_tokens_in_any_shape_are_sealed_shown_redacted_and_replayed_byte_for_byte(
    stack: Stack, encryption_key: str
) -> None:
    marker = f"ya29.m{uuid.uuid4().hex[:12]}_"
    source = stack.topics["connection.created"]
    dlq = f"{source}.dlq"
    # A token in each record's key too: a key not of the service's shape is kept only sealed.
    records = {f"{marker}key-{n}".encode(): v.encode() for n, v in enumerate(_shapes(marker).values())}
    assert all(marker.encode() in value for value in records.values())
    await produce(stack.bootstrap, source, list(records.items()))
    seal = LetterSeal(encryption_key)

    def letter_keyed(key: bytes, _topic: str, letter: dict[str, object]) -> bool:
        return _sealed_key(seal, json.dumps(letter).encode()) == key

    async with TopicReader(stack.bootstrap, [dlq]) as dead:
        letters = {
            key: DeadLetter.model_validate(await dead.wait_for(functools.partial(letter_keyed, key), timeout=60))
            for key in records
        }
        assert readable_markers([marker], *(b for r in dead.records for b in r[1:])) == []
        for key, letter in letters.items():
            assert seal.unseal(letter) == records[key] and letter.key is None

        # An operator holding the key sees each letter, redacted.
        shown = subprocess.run(
            [sys.executable, "-m", "stream_app", "dlq", "show", dlq],
            env={"PATH": "/usr/bin:/bin", "ENCRYPTION_KEY": encryption_key, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert marker not in shown.stdout and marker not in shown.stderr
        for key, value in records.items():
            at = f"{source}[{letters[key].partition}]@{letters[key].offset}\t"
            [line] = [line for line in shown.stdout.splitlines() if line.startswith(at)]
            _position, _when, shown_key, reason, view, headers = line.split("\t")
            assert shown_key == f"key=<key, {len(key)} bytes>"
            assert reason.startswith("reason=") and headers == "headers=[]"
            assert view.startswith('value={"event_id": "') or view == f"value=not JSON, {len(value)} bytes", view
        assert '"platform": "spotify"' in shown.stdout and "<name, 11 chars>" in shown.stdout

        # After the "fix", replay sends back each record as it was; the worker dead-letters them again.
        settings = load_settings(
            encryption_key=encryption_key,
            kafka_bootstrap_servers=stack.bootstrap,
            kafka_app_id=f"sealed-replay-{uuid.uuid4().hex[:8]}",
        )
        async with TopicReader(stack.bootstrap, [source]) as topic:
            report = await replay_dead_letters(settings, dlq)
            assert (report.replayed, report.reread, report.all_replayed) == (len(records), 0, True)
            deadline = time.monotonic() + 60
            while sum(1 for _t, key, _v in topic.records if key in records) < 2 * len(records):
                assert time.monotonic() < deadline, "the replayed records did not arrive"
                await topic.drain(0.5)
        for key, value in records.items():
            assert [v for _t, k, v in topic.records if k == key] == [value, value]
        for key in records:
            await _copies(dead, seal, key, 2)
        assert readable_markers([marker], *(b for r in dead.records for b in r[1:])) == []
    assert marker not in stack.worker.log()


async def _copies(reader: TopicReader, seal: LetterSeal, key: bytes, count: int, timeout: float = 60.0) -> None:
    def keyed() -> int:
        return sum(1 for _t, _k, value in reader.records if _sealed_key(seal, value) == key)

    deadline = time.monotonic() + timeout
    while keyed() < count:
        assert time.monotonic() < deadline, f"fewer than {count} dead letters of {key!r}"
        await reader.drain(0.5)


def _sealed_key(seal: LetterSeal, letter: bytes | None) -> bytes | None:
    """The record key a dead letter (of this run's key) keeps sealed."""
    try:
        return seal.unseal_key(DeadLetter.model_validate_json(letter or b""))
    except (ValidationError, UnsealError):
        return None
