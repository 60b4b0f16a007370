"""Prometheus metrics (the seed's, in Prometheus' naming). Labels are platforms, outcome
classes and topics only: never a user id, never a token."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
DISCONNECTS = Counter(
    "token_refresh_disconnects",
    "Connections disconnected, by what their tokens' revocation came to (revoked, failed, unsupported ...)",
    ["platform", "revocation"],
)
# A key id is a hash that names a key without revealing it (stream_app.crypto.key_id).
UNKNOWN_KEY = Counter(
    "token_refresh_unknown_key",
    "Ciphertexts met under a key id this process has not configured (a key deploy under way)",
    ["key_id"],
)


# What an operator alerts on, set by the HTTP API's /metrics handler at each scrape (the
# database's and the broker's figures at most every OPERATIONAL_GAUGES_MAX_AGE seconds).
LAST_SCAN_SUCCESS = Gauge(
    "token_refresh_last_scan_success_timestamp_seconds",
    "When this worker's expiry scan last ended without error (Unix time; the leader's is the one that runs)",
)
CONNECTIONS = Gauge("token_refresh_connections", "Stored connections by platform and status", ["platform", "status"])
OUTBOX_UNPUBLISHED = Gauge("token_refresh_outbox_unpublished", "Outcome events committed but not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "token_refresh_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outcome event (0: none)"
)
DEAD_LETTER_RECORDS = Gauge(
    "token_refresh_dead_letter_records", "Records held in each dead-letter topic (the broker's offsets)", ["topic"]
)
CONSUMER_LAG = Gauge(
    "token_refresh_consumer_lag",
    "Records not yet read by this worker, per assigned partition (log end offset minus position)",
    ["topic", "partition"],
)
CONSUMER_GROUP_JOINED = Gauge(
    "token_refresh_consumer_group_joined", "1 once this worker's consumer group has assigned it partitions", ["group"]
)
CIRCUIT_STATE = Gauge(
    "token_refresh_circuit_state",
    "1 for the state each platform's circuit is in (this worker's)",
    ["platform", "state"],
)
SPOOLED_TOKENS = Gauge(
    "token_refresh_spooled_tokens", "Rotated tokens in the local spool, awaiting storage (the database refused them)"
)


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
