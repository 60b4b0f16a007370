"""The BULK_REFRESH_* settings (stream_app.settings), as the job runner and the store read them."""

from __future__ import annotations

from dataclasses import dataclass, fields

from stream_app.settings import Settings


@dataclass(frozen=True)
class BulkSettings:
    rate_per_platform: float
    concurrency: int
    poll_interval_seconds: float
    lease_seconds: float
    save_interval_seconds: float
    page_size: int
    max_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BulkSettings:
        return cls(**{field.name: getattr(settings, f"bulk_refresh_{field.name}") for field in fields(cls)})

    @classmethod
    def defaults(cls) -> BulkSettings:
        """The settings' defaults (tests, and a store that only reads jobs)."""
        return cls(**{field.name: Settings.model_fields[f"bulk_refresh_{field.name}"].default for field in fields(cls)})
