"""The run's own Kafka broker and Postgres cluster, which it may crash and restart freely.

They are private (their own ports, data and cluster) so that a kill -9 of the broker or a
restart of Postgres hits only this run, never the shared services other suites use. Both
are provisioned by the project's scripts (scripts/kafka_local.py, scripts/postgres_local.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed:\n{result.stdout}{result.stderr}")
    return result.stdout


class Kafka:
    def __init__(self, port: int, state_dir: Path) -> None:
        self.port = port
        self.state_dir = state_dir
        self.env = {
            **os.environ,
            "KAFKA_LOCAL_DIR": str(state_dir),
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(port + 1),
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        _run([sys.executable, str(SCRIPTS / "kafka_local.py"), "start"], self.env)

    def crash(self) -> int:
        """kill -9 the broker JVM; returns its pid once it is gone."""
        pid = int((self.state_dir / "kafka.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and b"kafka.Kafka" in _cmdline(pid):
            time.sleep(0.1)
        return pid

    def stop(self) -> None:
        _run([sys.executable, str(SCRIPTS / "kafka_local.py"), "stop"], self.env)

    def remove(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Postgres:
    """A Debian cluster named ``chaos`` (pg_createcluster) on its own port."""

    name = "chaos"

    def __init__(self, port: int) -> None:
        self.port = port
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: float(p.parts[-3]))
        if not versions:
            raise RuntimeError("PostgreSQL is not installed (python3 scripts/postgres_local.py start installs it)")
        self.version = versions[-1].parts[-3]
        self.env = {**os.environ, "PG_CLUSTER": f"{self.version}/{self.name}"}

    def start(self) -> str:
        """Create the cluster if needed, start it, provision the role; returns the server URL."""
        listed = _run(["pg_lsclusters", "--no-header"])
        if not any(line.split()[:2] == [self.version, self.name] for line in listed.splitlines()):
            _run(["pg_createcluster", self.version, self.name, "-p", str(self.port)])
        return _run([sys.executable, str(SCRIPTS / "postgres_local.py"), "start"], self.env).strip().splitlines()[-1]

    def restart(self) -> None:
        _run(["pg_ctlcluster", self.version, self.name, "restart", "-m", "fast"])

    def drop(self) -> None:
        _run(["pg_dropcluster", self.version, self.name, "--stop"])


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")
