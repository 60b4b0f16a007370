"""Settings of bulk refresh jobs (``BULK_REFRESH_*``), read from the environment and `.env`.

Kept beside the jobs rather than in ``stream_app.settings``: only the job runner and the
job store read them."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BulkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULK_REFRESH_", env_file=".env", extra="ignore", frozen=True)

    # Refreshes per second and platform of a job that names no rate.
    rate_per_platform: float = Field(default=5.0, gt=0, le=1000)
    # Refreshes of one platform in flight at once within a job.
    concurrency: int = Field(default=4, ge=1, le=100)
    # How often an idle worker looks for a job to run.
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    # A running job's lease: another worker resumes it this long after its runner stopped
    # renewing (killed). Progress is saved, and the lease renewed, every save interval.
    lease_seconds: float = Field(default=30.0, gt=0)
    save_interval_seconds: float = Field(default=0.5, gt=0)
    # Connections read per keyset page of one platform. Large: without an index on its
    # conditions (status `error`), each page is a scan of the table (0.4 s at 1,000,000 rows).
    page_size: int = Field(default=1000, ge=1, le=10_000)
    # A job whose run failed (not its refreshes: the runner itself, e.g. the database) this many
    # times is marked failed.
    max_attempts: int = Field(default=5, ge=1)
