"""Kafka failures of the command-line tools as one line on stderr: no traceback, no client log lines."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka.errors import KafkaConnectionError, KafkaError

from stream_app.errors import TokenRefreshError
from stream_app.settings import Settings


@contextlib.asynccontextmanager
async def kafka_failures_as_one_line(settings: Settings, doing: str) -> AsyncIterator[None]:
    """Turn a KafkaError inside into a TokenRefreshError naming the problem (the CLI prints
    it as its one line, exit 1). ``doing`` says what failed, e.g. "reading 'token.refreshed'".

    aiokafka logs every failed connection attempt at ERROR: inside, it logs nothing below
    CRITICAL (the tool reports the failure itself, in its one line)."""
    client = logging.getLogger("aiokafka")
    level = client.level
    client.setLevel(logging.CRITICAL)
    try:
        yield
    except KafkaConnectionError:
        raise TokenRefreshError(
            f"{doing}: cannot reach a Kafka broker at {settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)"
        ) from None
    except KafkaError as exc:
        raise TokenRefreshError(f"{doing} failed: {type(exc).__name__}") from None
    finally:
        client.setLevel(level)
