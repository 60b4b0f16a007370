"""The worker creates its topics with the configured replication: the local single broker takes
one replica and refuses two with a line naming the setting; min.insync.replicas is set on each
created topic when configured, and left to the cluster's default when not."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import UnknownTopicOrPartitionError
from click.testing import CliRunner

from stream_app.cli import cli
from stream_app.errors import ConfigurationError
from stream_app.kafka_client import ensure_topics
from stream_app.settings import Settings, load_settings

pytestmark = pytest.mark.kafka

# Where a topic's config value comes from (DescribeConfigs' config_source).
SET_ON_THE_TOPIC, CLUSTER_DEFAULT = 1, 5
TOPIC_SETTINGS = (
    "topic_connection_created",
    "topic_token_expiring",
    "topic_token_refreshed",
    "topic_token_needs_reauth",
    "topic_token_refresh_failed",
    "topic_connection_disconnected",
    "topic_token_revoked",
    "topic_provider_circuit_changed",
)
SettingsFactory = Callable[..., Settings]


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    yield client
    await client.close()


@pytest.fixture
async def make_settings(
    kafka_bootstrap: str, encryption_key: str, admin: AIOKafkaAdminClient
) -> AsyncIterator[SettingsFactory]:
    """Settings naming topics of this test's own; the topics are deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {field: f"{field.removeprefix('topic_').replace('_', '.')}.{suffix}" for field in TOPIC_SETTINGS}

    def make(**overrides: Any) -> Settings:
        return load_settings(
            encryption_key=encryption_key, kafka_bootstrap_servers=kafka_bootstrap, **names, **overrides
        )

    yield make
    ours = [name for name in await admin.list_topics() if name.endswith(suffix) or name.endswith(f"{suffix}.dlq")]
    if ours:
        await admin.delete_topics(ours)


def service_topics(settings: Settings) -> list[str]:
    topics = settings.topic_names()
    inputs = ("connection.created", "token.expiring", "connection.disconnected")
    return [*topics.values(), *(f"{topics[name]}.dlq" for name in inputs)]


async def min_insync_replicas(admin: AIOKafkaAdminClient, topic: str) -> tuple[str, int]:
    """(value, where it comes from) of the topic's min.insync.replicas."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})
    deadline = time.monotonic() + 10
    while True:
        [response] = await admin.describe_configs([resource])
        [described] = response.to_object()["resources"]
        # A topic just created may take a moment to reach the broker's metadata.
        if described["error_code"] != UnknownTopicOrPartitionError.errno or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert described["error_code"] == 0, described
    [entry] = described["config_entries"]
    return entry["config_value"], entry["config_source"]


async def test_one_replica_on_the_local_broker_leaves_min_insync_to_the_cluster(
    make_settings: SettingsFactory, admin: AIOKafkaAdminClient
) -> None:
    settings = make_settings(kafka_replication_factor=1)

    await ensure_topics(settings)

    assert set(service_topics(settings)) <= set(await admin.list_topics())
    for topic in service_topics(settings):
        assert (await min_insync_replicas(admin, topic))[1] == CLUSTER_DEFAULT
    await ensure_topics(settings)  # existing topics: nothing to do, no error


async def test_min_insync_replicas_is_set_on_every_created_topic(
    make_settings: SettingsFactory, admin: AIOKafkaAdminClient
) -> None:
    settings = make_settings(kafka_replication_factor=1, kafka_min_insync_replicas=1)

    await ensure_topics(settings)

    for topic in service_topics(settings):
        assert await min_insync_replicas(admin, topic) == ("1", SET_ON_THE_TOPIC), topic


async def test_more_replicas_than_brokers_fails_naming_the_setting(
    make_settings: SettingsFactory, admin: AIOKafkaAdminClient
) -> None:
    settings = make_settings(kafka_replication_factor=2)

    with pytest.raises(ConfigurationError) as refused:
        await ensure_topics(settings)

    message = str(refused.value)
    assert message.startswith("KAFKA_REPLICATION_FACTOR: the cluster refused to create topic ")
    assert "InvalidReplicationFactorError" in message
    assert "\n" not in message
    assert not set(service_topics(settings)) & set(await admin.list_topics())


def test_the_worker_stops_with_one_line_when_the_cluster_refuses_its_topics(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    for field in TOPIC_SETTINGS:
        monkeypatch.setenv(field.upper(), getattr(settings, field))
    monkeypatch.setenv("ENCRYPTION_KEY", settings.encryption_key.get_secret_value())
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "2")
    # Were the refusal not noticed, start-up would stop at this database, not run a worker here.
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://nobody@127.0.0.1:1/nothing")

    result = CliRunner().invoke(cli, ["worker"])

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("token-refresh: KAFKA_REPLICATION_FACTOR: the cluster refused to create topic ")
