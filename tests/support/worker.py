"""The real worker (``python -m stream_app worker``) as a child process: the one launcher of the
tests, the benchmarks (benchmarks/e2e, bench_scan.py) and the chaos runs (scripts/chaoskit).

A worker runs in the directory of its log file. What it keeps relative to its working
directory (Faust's data directory ``<KAFKA_APP_ID>-data``, and the token spool
``token_refresh_spool`` unless TOKEN_SPOOL_DIR says otherwise) therefore lands in the caller's
run directory beside the log, never in the repository or wherever the caller was started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self


class WorkerFailed(RuntimeError):
    """The worker exited, or did not log what was awaited in time; the message ends with its log."""


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, command: str = "worker") -> None:
        """``command``: the CLI command the process runs (``worker``, or ``notify`` for the notifier)."""
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.log_path.stem

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream_app", self.command],
                env=self.env,
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_until_logged(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process is not None and self.process.poll() is not None:
                raise WorkerFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise WorkerFailed(f"{self.name} did not log {text!r} within {timeout:.0f}s:\n{self.log()[-4000:]}")

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.wait_until_logged("Ready", timeout)

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM and wait; True when it exited by itself (False: it had to be killed)."""
        process = self.process
        if process is None or process.poll() is not None:
            return True
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self) -> None:
        """SIGKILL to its whole process group, and wait for it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
