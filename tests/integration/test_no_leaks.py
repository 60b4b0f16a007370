"""No plain-text token, client secret or key anywhere, in any encoding, on Postgres: the real
worker at DEBUG meets refreshes, rotations, revoked grants, refused clients, 5xx, a provider
echoing the token, a provider echoing every encoding of every secret in each echo shape, and
poison records with plain-text tokens. Then its whole log, every record of every topic it used
(dead letters' base64 fields decoded), /metrics and every text column of its tables are
searched (tests/support/leaks.py); the log and /metrics for raw user ids too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream_app.sandbox import SandboxServer
from tests.integration.conftest import Stack
from tests.support.leaks import audit_run, hostile_credentials, run_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """This module's stack meets a sandbox whose client secrets change under every encoding."""
    with SandboxServer(credentials=hostile_credentials()) as server:
        yield server


async def test_no_token_or_secret_in_any_encoding_reaches_a_log_line_topic_metric_or_row(stack: Stack) -> None:
    seen = await run_scenario(stack)

    audit = await audit_run(stack, seen)

    assert not audit.blind_spots, "\n".join(audit.blind_spots)
    assert not audit.leaks, "\n".join(audit.leaks)
