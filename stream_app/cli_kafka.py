"""Kafka failures of the command-line tools as one line on stderr: no traceback, no client log lines."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka.errors import KafkaConnectionError, KafkaError

from stream_app.errors import TokenRefreshError
from stream_app.settings import Settings


def quiet_client_logs() -> None:
    """aiokafka logs every failed connection attempt at ERROR: a tool reports the failure
    itself, in its one line."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@contextlib.asynccontextmanager
async def kafka_failures_as_one_line(settings: Settings, doing: str) -> AsyncIterator[None]:
    """Turn a KafkaError inside into a TokenRefreshError naming the problem (the CLI prints
    it as its one line, exit 1). ``doing`` says what failed, e.g. "reading 'token.refreshed'"."""
    quiet_client_logs()
    try:
        yield
    except KafkaConnectionError:
        raise TokenRefreshError(
            f"{doing}: cannot reach a Kafka broker at {settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)"
        ) from None
    except KafkaError as exc:
        raise TokenRefreshError(f"{doing} failed: {type(exc).__name__}") from None
