"""`make run`'s demo (scripts/demo.py) as a user starts it: the worker and the notifier come up on
the embedded SQLite default, and the revoked grant's re-auth email reaches the local SMTP sink,
which prints it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.infra import free_port, require_kafka

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_prints_the_re_auth_email_its_notifier_sends(tmp_path: Path) -> None:
    bootstrap = require_kafka()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DEMO_WORKDIR": str(tmp_path / "demo"),
        "HTTP_PORT": str(free_port()),
        "NOTIFY_HTTP_PORT": str(free_port()),
        "DEMO_SMTP_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "scripts/demo.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while "Reconnect your Spotify account" not in log_path.read_text(errors="replace"):
            assert demo.poll() is None, f"the demo exited with {demo.returncode}:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no re-auth email printed:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
    output = log_path.read_text()
    email = next(line for line in output.splitlines() if line.startswith("demo: email"))
    assert "@demo.example" in email and "'Reconnect your Spotify account'" in email
    assert "demo: |  https://app.demo.example/connections/spotify" in output
