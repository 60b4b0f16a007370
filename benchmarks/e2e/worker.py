"""One real worker process, ``python -m stream_app worker``, as an operator runs it.

Like chaoskit's ``Worker`` (scripts/chaoskit/processes.py), but started in the run's own
directory (Faust's data directory and the token spool land there, not in the repository)
and with the service's normal timings: only the scan interval is shortened (a wave then
starts within seconds instead of a minute; it is timed from the scan's first request).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .environment import Environment

TOPICS = ("connection.created", "token.expiring", "token.refreshed", "token.needs_reauth", "token.refresh_failed")


def topic_names(environment: Environment, tag: str) -> dict[str, str]:
    return {name: f"{name}.bench-{environment.run_id}-{tag}" for name in TOPICS}


def worker_env(
    environment: Environment,
    topics: dict[str, str],
    group: str,
    *,
    scan_interval: float,
    platform_concurrency: int,
    max_in_flight: int | None,
    partitions: int,
    code: str | None = None,
) -> dict[str, str]:
    env = {
        "ENCRYPTION_KEY": environment.key,
        "DATABASE_URL": environment.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": environment.bootstrap,
        "KAFKA_APP_ID": group,
        "KAFKA_TOPIC_PARTITIONS": str(partitions),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in topics.items()},
        **environment.sandbox.service_env(),
        "SCAN_INTERVAL_SECONDS": str(scan_interval),
        "PLATFORM_MAX_CONCURRENCY": str(platform_concurrency),
        "TOKEN_SPOOL_DIR": str(environment.workdir / "spool" / group),
        "METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    if code is not None:  # that tree's stream_app, agents and schemas come first on the path
        env["PYTHONPATH"] = code
    if max_in_flight is not None:
        env["MAX_REFRESHES_IN_FLIGHT"] = str(max_in_flight)
    return env


class WorkerProcess:
    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream_app", "worker"],
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ready" in self.log_path.read_text(errors="replace"):
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
