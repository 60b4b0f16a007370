"""Prometheus metrics (the seed's, in Prometheus' naming). Labels are platforms, outcome
classes and topics only: never a user id, never a token."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

REFRESH_SUCCESS = Counter("token_refresh_success", "Refreshes that stored new tokens", ["platform"])
REFRESH_FAILED = Counter(
    "token_refresh_failed", "Refreshes that ended in an error or a re-auth", ["platform", "reason"]
)
REFRESH_DEFERRED = Counter(
    "token_refresh_deferred",
    "Refreshes put off to a later scan (circuit_open, rate_limited), none slept in memory",
    ["platform", "reason"],
)
REFRESH_DURATION = Histogram(
    "token_refresh_duration_seconds",
    "From the first request to the stored result",
    ["platform"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
EXPIRING_SOON = Gauge("tokens_expiring_soon", "Connections the last expiry scan requested a refresh for")
REFRESHES_IN_FLIGHT = Gauge("token_refresh_in_flight", "Refreshes running in this worker")
LOCAL_REFRESHES = Counter(
    "token_refresh_local_requests",
    "Due connections the scanning worker refreshed itself: broker_unavailable, lost_request",
    ["why"],
)
DEAD_LETTERS = Counter("token_refresh_dead_letters", "Input records sent to a dead-letter topic", ["topic"])
CIRCUIT_OPEN = Gauge("token_refresh_circuit_open", "1 while a platform's circuit is open", ["platform"])
CIRCUIT_STUCK = Gauge(
    "token_refresh_circuit_stuck",
    "1 while a platform's circuit stays open well past its cool-down (no trial call settled it)",
    ["platform"],
)
OUTBOX_PRUNED = Counter(
    "token_refresh_outbox_pruned",
    "Published outbox events deleted once older than OUTBOX_RETENTION_HOURS",
)
# A key id is a hash that names a key without revealing it (stream_app.crypto.key_id).
UNKNOWN_KEY = Counter(
    "token_refresh_unknown_key",
    "Ciphertexts met under a key id this process has not configured (a key deploy under way)",
    ["key_id"],
)


# What /ready answers, replaced whole by the worker's upkeep (read from the server's thread).
_readiness: dict[str, Any] = {"ready": True, "stuck_circuits": []}


def report_readiness(stuck_circuits: list[str], unknown_key_ids: list[str] | None = None) -> None:
    """Not ready while a platform's circuit stays open past its cool-down (nothing reaches it),
    or while stored rows under key ids this process lacks were met lately
    (TokenCipher.unknown_key_ids: a key deploy has not reached it); those are listed."""
    global _readiness
    readiness: dict[str, Any] = {"ready": not stuck_circuits, "stuck_circuits": sorted(stuck_circuits)}
    if unknown_key_ids:
        readiness |= {"ready": False, "unknown_key_ids": sorted(unknown_key_ids)}
    _readiness = readiness


def serve(host: str, port: int) -> None:
    """Expose /metrics (Prometheus) and /ready (JSON; 503 when not ready) from a background
    thread, so the worker's event loop stays free."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/ready":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        readiness = _readiness
        body = json.dumps(readiness).encode()
        status = "200 OK" if readiness["ready"] else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line."""


def record_refresh(platform: str, outcome: str, reason: str, seconds: float, circuit_open: bool) -> None:
    """Count what one engine call did (skips are not counted: nothing happened)."""
    if outcome == "refreshed":
        REFRESH_SUCCESS.labels(platform).inc()
        REFRESH_DURATION.labels(platform).observe(seconds)
    elif outcome in ("failed", "needs_reauth"):
        REFRESH_FAILED.labels(platform, reason).inc()
    elif outcome == "deferred":
        REFRESH_DEFERRED.labels(platform, reason).inc()
    CIRCUIT_OPEN.labels(platform).set(1 if circuit_open else 0)
