"""The environment of a real worker process (``python -m stream_app worker``, started by the
suite's ``WorkerProcess`` in the run's own directory, where its Faust data directory lands),
as an operator runs it: the service's normal timings, only the scan interval shortened (a wave
then starts within seconds instead of a minute; it is timed from the scan's first request).
"""

from __future__ import annotations

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
        "HTTP_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    if code is not None:  # that tree's stream_app, agents and schemas come first on the path
        env["PYTHONPATH"] = code
    if max_in_flight is not None:
        env["MAX_REFRESHES_IN_FLIGHT"] = str(max_in_flight)
    return env
