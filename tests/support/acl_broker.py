"""A second local broker that authenticates (SASL/PLAIN) and authorizes (StandardAuthorizer, deny by
default), started and stopped through scripts/kafka_local.py on free ports of its own.

Listeners: SASL_PLAINTEXT for every client (``bootstrap``); the controller's listener is SASL too,
as ``admin``, so no unauthenticated principal needs to be a super user; and a PLAINTEXT listener
on KAFKA_PORT, which kafka_local.py's readiness check speaks to: there a client is User:ANONYMOUS,
which no ACL names, so it sees no topic and may do nothing.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.infra import free_port

REPO = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = REPO / "scripts" / "kafka_local.py"
ADMIN = "admin"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule required"


class AclBroker:
    def __init__(self, state_dir: Path, users: list[str]) -> None:
        self.state_dir = state_dir
        self.passwords = {name: secrets.token_hex(16) for name in [ADMIN, *users]}
        self.plain_port, self.sasl_port, self.controller_port = _distinct_free_ports(3)
        self.admin_properties = state_dir / "admin.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def plaintext_bootstrap(self) -> str:
        return f"127.0.0.1:{self.plain_port}"

    def client_options(self, user: str) -> dict[str, Any]:
        """aiokafka options of a client authenticated as ``user``."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": user,
            "sasl_plain_password": self.passwords[user],
        }

    def service_env(self, user: str) -> dict[str, str]:
        """The worker's settings for authenticating as ``user``."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.passwords[user],
        }

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        extra = self.state_dir / "sasl-acl.properties"
        extra.write_text(self._server_properties())
        self.admin_properties.write_text(
            f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config={self._login(ADMIN)};\n"
        )
        self._kafka_local("start", KAFKA_EXTRA_PROPERTIES=str(extra))

    def stop(self) -> None:
        self._kafka_local("stop")

    def _kafka_local(self, command: str, **env: str) -> None:
        environment = {
            **os.environ,
            "KAFKA_LOCAL_DIR": str(self.state_dir / "kafka"),
            "KAFKA_PORT": str(self.plain_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            **env,
        }
        result = subprocess.run(
            [sys.executable, str(KAFKA_LOCAL), command], env=environment, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka_local.py {command} failed:\n{result.stdout}{result.stderr}")

    def _login(self, user: str, *accepted: str) -> str:
        users = "".join(f' user_{name}="{self.passwords[name]}"' for name in accepted)
        return f'{PLAIN_LOGIN} username="{user}" password="{self.passwords[user]}"{users}'

    def _server_properties(self) -> str:
        host = "127.0.0.1"
        settings = {
            "listeners": f"PLAINTEXT://{host}:{self.plain_port},SASL_PLAINTEXT://{host}:{self.sasl_port},"
            f"CONTROLLER://{host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{self.plain_port},SASL_PLAINTEXT://{host}:{self.sasl_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
            "CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": self._login(ADMIN, *self.passwords) + ";",
            "listener.name.controller.plain.sasl.jaas.config": self._login(ADMIN, ADMIN) + ";",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)
