"""What a worker tells its HTTP API about itself. `token-refresh api` runs without a worker:
its API has no probe, and readiness then checks the database alone."""

from __future__ import annotations

from typing import Protocol


class WorkerProbe(Protocol):
    def consumer_groups(self) -> dict[str, bool]:
        """Each input consumer group of the worker, and whether it has joined (been assigned)."""

    async def partition_lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> records not yet read, for the partitions assigned here."""

    def circuit_states(self) -> dict[str, str]:
        """Platform -> its circuit's state (closed, open, half_open)."""

    def stuck_circuits(self) -> list[str]:
        """Platforms whose circuit stays open past its cool-down."""

    def unknown_key_ids(self) -> list[str]:
        """Key ids met in stored rows that this process has not configured."""

    def spooled_tokens(self) -> int:
        """Rotated tokens awaiting storage."""
