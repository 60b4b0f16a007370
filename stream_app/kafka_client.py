"""Plain aiokafka clients (publisher, replay, tools), from the same settings as Faust."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from stream_app.errors import ConfigurationError, TokenRefreshError
from stream_app.settings import Settings

# Topics the service consumes; each has a `<topic>.dlq` for what it cannot process.
INPUT_TOPICS = ("connection.created", "token.expiring", "connection.disconnected")
# An input topic's dead letters go to the topic of its name with this suffix.
DLQ_SUFFIX = ".dlq"


# Client libraries whose verbose levels print data: aiokafka logs whole records (keys carry user
# ids) at DEBUG; httpx logs every request at INFO (a line per refresh, with its URL); aiosqlite
# logs every call at DEBUG with its bound parameters (user ids, ciphertexts), and so does asyncpg;
# SQLAlchemy logs statements at INFO (parameters hidden: hide_parameters) and result rows and
# pool checkouts at DEBUG.
CAPPED_LOGGERS = (
    ("aiokafka", logging.INFO),
    ("httpx", logging.WARNING),
    ("aiosqlite", logging.INFO),
    ("asyncpg", logging.INFO),
    ("sqlalchemy.engine", logging.WARNING),
    ("sqlalchemy.pool", logging.WARNING),
)


def cap_client_logging() -> None:
    """Keep the client libraries of CAPPED_LOGGERS at or above their floor, whatever LOG_LEVEL."""
    # Their own levels, not the root's: Faust lowers the root to LOG_LEVEL after this runs.
    for name, floor in CAPPED_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.level, floor))
    conn = logging.getLogger("aiokafka.conn")
    if not any(isinstance(f, OnceOnly) for f in conn.filters):
        conn.addFilter(OnceOnly(_PLAIN_SASL_WARNING))


# aiokafka warns of SASL/PLAIN without TLS on every connection it opens (dozens a minute).
_PLAIN_SASL_WARNING = "Sending username and password in the clear"


class OnceOnly(logging.Filter):
    """Lets the first record of ``message`` through, and drops its repeats."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self._message = message
        self._seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self._message:
            return True
        seen, self._seen = self._seen, True
        return not seen


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


def topic_configs(settings: Settings) -> dict[str, str]:
    """Per-topic configuration of the topics the service creates."""
    if settings.kafka_min_insync_replicas is None:
        return {}  # the cluster's default applies
    return {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}


async def ensure_topics(settings: Settings) -> None:
    """Create the service's topics (and their dead-letter topics) up front, with the configured
    partitions, replication factor and min.insync.replicas; existing topics are left as they
    are. A topic the cluster refuses to create stops start-up with one line saying why."""
    topics = settings.topic_names()
    names = [*topics.values(), *(topics[name] + DLQ_SUFFIX for name in INPUT_TOPICS)]
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
                topic_configs=topic_configs(settings),
            )
            for name in names
            if name not in existing
        ]
        if missing:
            response = await admin.create_topics(missing)
            _raise_refusals(response.topic_errors)
    finally:
        await admin.close()


# The setting behind each refusal a setting can cause (Kafka error codes).
_SETTING_REFUSED = {
    37: "KAFKA_TOPIC_PARTITIONS",  # INVALID_PARTITIONS
    38: "KAFKA_REPLICATION_FACTOR",  # INVALID_REPLICATION_FACTOR: more replicas than brokers
    40: "KAFKA_MIN_INSYNC_REPLICAS",  # INVALID_CONFIG
}


def _raise_refusals(topic_errors: list[tuple[Any, ...]]) -> None:
    """The admin client reports per-topic failures in its response rather than raising them."""
    for topic, code, *message in topic_errors:
        if code in (0, TopicAlreadyExistsError.errno):  # created, or another worker was first
            continue
        error = for_code(code)
        detail = message[0] if message and message[0] else error.description
        setting = _SETTING_REFUSED.get(code, "Kafka")
        raise ConfigurationError(f"{setting}: the cluster refused to create topic {topic}: {error.__name__}: {detail}")


async def _described_partitions(settings: Settings) -> dict[str, list[TopicPartition]]:
    """Every topic's partitions, in order (all topics are described: describing one by name
    would auto-create it)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return {
        topic["topic"]: sorted(TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"])
        for topic in described
    }


async def existing_partitions(settings: Settings, *names: str) -> dict[str, list[TopicPartition]]:
    """Each topic's partitions, in order; raises TokenRefreshError naming a topic that does not exist."""
    topics = await _described_partitions(settings)
    for name in names:
        if name not in topics:
            raise TokenRefreshError(f"topic {name!r} does not exist")
    return {name: topics[name] for name in names}


async def record_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """Records each existing topic of ``names`` holds now (end minus beginning offsets, summed
    over its partitions); a topic that does not exist is left out."""
    existing = await _described_partitions(settings)
    partitions = [tp for name in names for tp in existing.get(name, [])]
    counts = {name: 0 for name in names if name in existing}
    if not partitions:
        return counts
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    try:
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    for tp in partitions:
        counts[tp.topic] += ends[tp] - beginnings[tp]
    return counts
