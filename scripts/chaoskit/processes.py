"""The real processes under test: `python -m stream_app worker` (twice, tests/support/worker.py) and
the sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stream_app.sandbox.dialects import PLATFORMS, credential_key, default_credentials
from tests.support.worker import WorkerProcess


class Sandbox:
    """``python -m stream_app.sandbox`` on ``port``, quiet (no access-log line per request: under
    a run's load formatting them costs the sandbox CPU) unless ``access_log``."""

    def __init__(self, port: int, log_path: Path, *, access_log: bool = False) -> None:
        self.port = port
        self.log_path = log_path
        self.access_log = access_log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "stream_app.sandbox", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, *([] if self.access_log else ["--quiet"])],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/_admin/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"sandbox exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError("sandbox did not start")

    def service_env(self) -> dict[str, str]:
        """What the worker needs to use the sandbox: token URLs and the sandbox's default clients."""
        env: dict[str, str] = {}
        for key in dict.fromkeys(credential_key(p) for p in PLATFORMS):
            client_id, secret = default_credentials(key)
            prefix = key.upper()
            env[f"{prefix}_TOKEN_URL"] = f"{self.base_url}/{key}/token"
            env[f"{prefix}_CLIENT_ID"] = client_id
            env[f"{prefix}_CLIENT_SECRET"] = secret
        return env

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


class Worker:
    """One worker slot; each (re)start is a new process with its own log file, in ``workdir``
    (where its Faust data directory and token spool are kept too)."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        self.runs: list[WorkerProcess] = []

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HTTP_PORT']}/metrics"

    @property
    def logs(self) -> list[Path]:
        return [run.log_path for run in self.runs]

    def start(self) -> None:
        self.runs.append(WorkerProcess(self.env, self.workdir / f"{self.name}.{len(self.runs)}.log").start())

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.runs[-1].wait_ready(timeout)

    def kill9(self) -> int:
        if not self.runs or not self.runs[-1].running:
            raise RuntimeError(f"{self.name} is not running")
        self.runs[-1].kill()
        return self.runs[-1].pid

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM and wait; True when it exited by itself (False: it had to be killed)."""
        return self.runs[-1].stop(timeout) if self.runs else True

    def log_text(self) -> str:
        return "".join(run.log() for run in self.runs)
