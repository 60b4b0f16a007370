"""The real processes under test: `python -m stream_app worker` (twice) and the sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stream_app.sandbox.dialects import PLATFORMS, credential_key, default_credentials

REPO = Path(__file__).resolve().parents[2]


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_app", *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Sandbox:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.process = _spawn(["sandbox", "--port", str(self.port)], {}, self.log_path)
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
    """One worker slot; each (re)start is a new process with its own log file."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['METRICS_PORT']}/metrics"

    def start(self) -> None:
        log_path = self.workdir / f"{self.name}.{len(self.logs)}.log"
        self.logs.append(log_path)
        self.process = _spawn(["worker"], self.env, log_path)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ready" in self.logs[-1].read_text(errors="replace"):
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.logs[-1]}")
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s; see {self.logs[-1]}")

    def kill9(self) -> int:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return self.process.pid

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM and wait; True when it exited by itself (False: it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return True
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return False

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs if path.exists())
