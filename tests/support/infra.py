"""Reaching the real Kafka and Postgres the suite runs against.

Locally a missing service skips the tests that need it, with the reason; under CI=true
it fails them, so a broken provisioning step can never pass as green.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.support.databases import POSTGRES_URL

IN_CI = os.environ.get("CI", "").lower() == "true"
KAFKA_BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int, how: str) -> None:
    if reachable(host, port):
        return
    message = f"{service} is not reachable at {host}:{port}; start it with `{how}`"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_kafka() -> str:
    host, _, port = KAFKA_BOOTSTRAP.split(",")[0].rpartition(":")
    require("Kafka", host, int(port), "python3 scripts/kafka_local.py start")
    return KAFKA_BOOTSTRAP


def require_postgres() -> str:
    require("PostgreSQL", "127.0.0.1", 5432, "python3 scripts/postgres_local.py start")
    return POSTGRES_URL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
