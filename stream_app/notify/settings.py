"""The notifier's settings: the service's own names for the broker, the database and the topics
(read here, not imported: the notifier is its own process), and its own ``NOTIFY_*`` names.

A bad setting stops start-up with one line naming the variable (``NotifyConfigurationError``).
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./token_refresh.db"
_QUIET_HOURS = re.compile(r"^(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})$")


class NotifyConfigurationError(Exception):
    """A setting the notifier cannot start with; its message is one line naming the variable."""


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, case_sensitive=False)

    # The service's own names (README "Configuration").
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_topic_partitions: int = Field(default=4, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1)
    # The notifier's consumer group is <KAFKA_APP_ID>-notify.
    kafka_app_id: str = "token-refresh"
    kafka_session_timeout_seconds: float = Field(default=60, ge=6, le=3600, allow_inf_nan=False)
    topic_connection_created: str = "connection.created"
    topic_token_refreshed: str = "token.refreshed"
    topic_token_needs_reauth: str = "token.needs_reauth"
    topic_token_refresh_failed: str = "token.refresh_failed"
    topic_token_revoked: str = "token.revoked"
    topic_provider_circuit_changed: str = "provider.circuit_changed"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # An event dated later than now plus this is told, but not trusted to show a connection
    # recovered or revoked (a skewed clock or a forged date would mute its later problems).
    event_max_clock_skew_seconds: float = Field(default=300, ge=0, le=86_400, allow_inf_nan=False)

    # The notifier's own.
    notify_dlq_topic: str = "notify.dlq"
    # Where a new consumer group starts reading (a group with committed offsets resumes there).
    notify_offset_reset: Literal["earliest", "latest"] = "earliest"
    notify_http_host: str = "0.0.0.0"  # noqa: S104 - a container's probes come from outside
    notify_http_port: int = Field(default=9465, ge=0, le=65535)
    # Per channel: deliveries handed to its senders at once (the bounded queue) and senders.
    notify_queue_size: int = Field(default=100, ge=1, le=10_000)
    notify_senders_per_channel: int = Field(default=4, ge=1, le=100)
    # A send's deadline, and a claimed delivery's hold (another notifier re-sends it once lapsed).
    notify_send_timeout_seconds: float = Field(default=60, gt=0, le=3600, allow_inf_nan=False)
    notify_lease_seconds: float = Field(default=120, gt=0, le=86_400, allow_inf_nan=False)
    # Retries: a full-jitter exponential backoff (uniform 0 .. min(max, base x 2^attempts)),
    # never sooner than a Retry-After; a delivery still failing this long after it was taken in
    # is dead-lettered.
    notify_retry_base_seconds: float = Field(default=5, gt=0, le=86_400, allow_inf_nan=False)
    notify_retry_max_seconds: float = Field(default=900, gt=0, le=30 * 86_400, allow_inf_nan=False)
    notify_give_up_hours: float = Field(default=24, gt=0, le=24 * 30, allow_inf_nan=False)
    # How often idle dispatchers look for due deliveries (new ones wake them at once).
    notify_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60, allow_inf_nan=False)
    # Finished deliveries (the dedupe keys) are kept this long: longer than the topics' retention
    # (7 days by default), so a replay from the earliest offset finds every key it sent.
    notify_retention_days: float = Field(default=30, gt=0, le=3650, allow_inf_nan=False)
    # Quiet hours of user-facing channels, "HH:MM-HH:MM" in NOTIFY_QUIET_HOURS_TIMEZONE: their
    # deliveries wait for the end (never dropped). Unset: none.
    notify_quiet_hours: str | None = None
    notify_quiet_hours_timezone: str = "UTC"
    # At most one needs_reauth notice per connection in this many hours on a user-facing channel.
    notify_reauth_notice_interval_hours: float = Field(default=24, ge=0, le=24 * 365, allow_inf_nan=False)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_async(cls, value: SecretStr) -> SecretStr:
        # SQLAlchemy's own errors quote the URL (its password included): none is passed on.
        try:
            url = make_url(value.get_secret_value())
        except (ArgumentError, ValueError):
            raise ValueError(
                "is not a database URL (postgresql+asyncpg://user:password@host:port/database or "
                "sqlite+aiosqlite:///path; percent-encode @ : / in the password)"
            ) from None
        if "@" in (url.host or ""):
            raise ValueError("holds an '@' after the password's: percent-encode @ in the password as %40")
        try:
            dialect = url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(
                f"unknown database {url.drivername!r}: postgresql+asyncpg:// or sqlite+aiosqlite://"
            ) from None
        if not getattr(dialect, "is_async", False):
            raise ValueError(f"{url.drivername!r} is not an async driver: postgresql+asyncpg:// or sqlite+aiosqlite://")
        try:
            dialect.import_dbapi()
        except ImportError:
            raise ValueError(f"the driver of {url.drivername!r} is not installed") from None
        return value

    @field_validator("notify_quiet_hours")
    @classmethod
    def _quiet_hours_parse(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        quiet_hours_bounds(value)
        return value.strip()

    @field_validator("notify_quiet_hours_timezone")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> NotifySettings:
        if self.kafka_security_protocol.startswith("SASL"):
            for name, value in (
                ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
            ):
                if not value:
                    raise ValueError(f"{name}: is required with KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}")
        if self.notify_lease_seconds < self.notify_send_timeout_seconds + 5:
            raise ValueError(
                "NOTIFY_LEASE_SECONDS: must exceed NOTIFY_SEND_TIMEOUT_SECONDS by at least 5 s "
                "(a send must end inside its lease, or another notifier sends it again meanwhile)"
            )
        if self.notify_retry_max_seconds < self.notify_retry_base_seconds:
            raise ValueError("NOTIFY_RETRY_MAX_SECONDS: must be at least NOTIFY_RETRY_BASE_SECONDS")
        return self

    @property
    def consumer_group(self) -> str:
        return f"{self.kafka_app_id}-notify"

    def topic_names(self) -> dict[str, str]:
        """Default topic name -> configured name, of the topics the notifier reads."""
        return {
            "token.refreshed": self.topic_token_refreshed,
            "token.needs_reauth": self.topic_token_needs_reauth,
            "token.refresh_failed": self.topic_token_refresh_failed,
            "token.revoked": self.topic_token_revoked,
            "provider.circuit_changed": self.topic_provider_circuit_changed,
            "connection.created": self.topic_connection_created,
        }

    def quiet_hours(self) -> tuple[time, time] | None:
        return quiet_hours_bounds(self.notify_quiet_hours) if self.notify_quiet_hours else None


def quiet_hours_bounds(value: str) -> tuple[time, time]:
    match = _QUIET_HOURS.match(value.strip())
    if match is None:
        raise ValueError("must be HH:MM-HH:MM, e.g. 22:00-07:00")
    try:
        start, end = (time.fromisoformat(match[part].zfill(5)) for part in ("start", "end"))
    except ValueError:
        raise ValueError("must be HH:MM-HH:MM with hours 00-23 and minutes 00-59") from None
    if start == end:
        raise ValueError("start and end are the same time (unset it for no quiet hours)")
    return start, end


def load_notify_settings(**overrides: Any) -> NotifySettings:
    """The settings, or NotifyConfigurationError with one line naming the bad variable."""
    try:
        return NotifySettings(**overrides)
    except ValidationError as exc:
        raise NotifyConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One part per problem, naming the environment variable, never echoing its value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = "_".join(str(part) for part in error["loc"]).upper()
        name = field if not prefix or field.startswith(prefix.upper()) else f"{prefix.upper()}{field}"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required but not set"
        problems.append(f"{name}: {message}" if field else message)  # a check across settings names them
    return "; ".join(problems)
