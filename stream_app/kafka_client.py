"""Plain aiokafka clients (publisher, replay, tools), from the same settings as Faust."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_app.settings import Settings

# Topics the service consumes; each has a `<topic>.dlq` for what it cannot process.
INPUT_TOPICS = ("connection.created", "token.expiring")


def cap_client_logging() -> None:
    """aiokafka logs whole records (keys carry user ids) at DEBUG: never let it go below INFO."""
    logger = logging.getLogger("aiokafka")
    # Its own level, not the root's: Faust lowers the root to LOG_LEVEL after this runs.
    logger.setLevel(max(logger.level, logging.INFO))


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of an SSL or SASL_SSL connection, None for plain ones."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    return ssl.create_default_context(cafile=cafile)


def client_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def idempotent_producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    """A producer whose records every in-sync replica has before a send completes, once each."""
    return AIOKafkaProducer(acks="all", enable_idempotence=True, **client_options(settings), **extra)


async def ensure_topics(settings: Settings, *, replication_factor: int = 1) -> None:
    """Create the service's topics (and their dead-letter topics) up front, with the configured
    partition count; existing topics are left as they are."""
    topics = settings.topic_names()
    names = [*topics.values(), *(f"{topics[name]}.dlq" for name in INPUT_TOPICS)]
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=settings.kafka_topic_partitions, replication_factor=replication_factor)
            for name in names
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker created them first
    finally:
        await admin.close()
