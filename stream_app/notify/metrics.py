"""The notifier's metrics, in a registry of its own (served at its /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class NotifyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def counter(name: str, what: str) -> Counter:
            return Counter(f"token_refresh_notify_{name}", what, ["channel"], registry=self.registry)

        self.sent = counter("sent", "Notices (a digest counts each of its notices) a channel delivered.")
        self.failed = counter("failed", "Failed sends (each attempt; retried or dead-lettered).")
        self.deduplicated = counter("deduplicated", "Deliveries already known (a replayed or re-read event).")
        self.dead_lettered = counter("dead_lettered", "Deliveries given up and written to the notifier's DLQ.")
        self.suppressed = counter("suppressed", "needs_reauth notices held back by the per-connection rate limit.")
        self.dropped = counter("dropped", "Pending problem notices dropped: the connection recovered or was revoked.")
        self.accepted = counter("accepted", "Deliveries taken in (recorded in the store).")
        self.queued = Gauge(
            "token_refresh_notify_queued",
            "Deliveries not finished yet (pending or being sent), per channel.",
            ["channel"],
            registry=self.registry,
        )
        self.malformed = Counter(
            "token_refresh_notify_malformed_records",
            "Records the notifier could not read, written to its DLQ, per source topic.",
            ["topic"],
            registry=self.registry,
        )

    def declare(self, channels: list[str]) -> None:
        """Every series of every channel exists from the start (at 0)."""
        for name in channels:
            for metric in (
                self.sent,
                self.failed,
                self.deduplicated,
                self.dead_lettered,
                self.suppressed,
                self.dropped,
                self.accepted,
            ):
                metric.labels(channel=name)
            self.queued.labels(channel=name).set(0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
