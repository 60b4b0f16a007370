"""The Faust application, configured from Settings. Agents are attached by ``agents.register``."""

from __future__ import annotations

import faust
from faust.types.auth import CredentialsT

from stream_app.kafka_client import ssl_context
from stream_app.settings import Settings


def create_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.kafka_app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_seconds / 3),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )


def _credentials(settings: Settings) -> CredentialsT | None:
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
