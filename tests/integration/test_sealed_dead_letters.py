"""End to end on the real broker: records with plain-text tokens in the shapes that used to leak
land in `connection.created.dlq` with nothing readable; `dlq show` prints a redacted view; and
`dlq replay` after a fix sends back the original bytes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest

from stream_app.crypto import TokenCipher, generate_key
from stream_app.dlq_replay import replay_dead_letters
from stream_app.settings import load_settings
from tests.integration.conftest import Stack
from tests.support.dead_letters import opened, readable_markers
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
    records = {f"shape-{n}-{uuid.uuid4().hex[:6]}".encode(): v.encode() for n, v in enumerate(_shapes(marker).values())}
    assert all(marker.encode() in value for value in records.values())
    await produce(stack.bootstrap, source, list(records.items()))

    async with TopicReader(stack.bootstrap, [dlq]) as dead:
        for key in records:
            await dead.wait_for(lambda _t, r, key=key: r.get("key") == key.decode(), timeout=60)
        letters = {key: value for _t, key, value in dead.records if key in records}
        assert len(letters) == len(records)
        assert readable_markers([marker], *(b for r in dead.records for b in r[1:])) == []
        for key, letter in letters.items():
            assert letter is not None and opened(letter, encryption_key) == records[key]

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
            [line] = [line for line in shown.stdout.splitlines() if f"\tkey={json.dumps(key.decode())}\t" in line]
            position, _when, _key, reason, view, headers = line.split("\t")
            assert position.startswith(f"{source}[") and reason.startswith("reason=") and headers == "headers=[]"
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
            await _copies(dead, key, 2)
        assert readable_markers([marker], *(b for r in dead.records for b in r[1:])) == []
    assert marker not in stack.worker.log()


async def _copies(reader: TopicReader, key: bytes, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len([k for _t, k, _v in reader.records if k == key]) < count:
        assert time.monotonic() < deadline, f"fewer than {count} dead letters of {key!r}"
        await reader.drain(0.5)
