"""The notifier's Kafka clients, from the service's own broker settings."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_app.notify.settings import NotifyConfigurationError, NotifySettings


def client_options(settings: NotifySettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = ssl.create_default_context(cafile=cafile)
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def dead_letter_producer(settings: NotifySettings) -> AIOKafkaProducer:
    """Every in-sync replica has a dead letter before its send completes."""
    return AIOKafkaProducer(acks="all", enable_idempotence=True, **client_options(settings))


async def ensure_dead_letter_topic(settings: NotifySettings) -> None:
    """Create NOTIFY_DLQ_TOPIC like the service creates its topics (an existing one is left)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if settings.notify_dlq_topic in set(await admin.list_topics()):
            return
        configs = {}
        if settings.kafka_min_insync_replicas is not None:
            configs["min.insync.replicas"] = str(settings.kafka_min_insync_replicas)
        topic = NewTopic(
            settings.notify_dlq_topic,
            num_partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            topic_configs=configs,
        )
        response = await admin.create_topics([topic])
        for _name, code, *message in response.topic_errors:
            if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another notifier was first)
                raise NotifyConfigurationError(
                    f"NOTIFY_DLQ_TOPIC: the cluster refused to create {settings.notify_dlq_topic!r} "
                    f"(Kafka error {code}: {message[0] if message else ''}); check KAFKA_REPLICATION_FACTOR "
                    "and KAFKA_TOPIC_PARTITIONS"
                )
    finally:
        await admin.close()
