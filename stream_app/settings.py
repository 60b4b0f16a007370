"""Settings (contract §8), read once from the environment and `.env` at the composition root.

Platform credentials and token URLs are named after the catalog's credential keys
(``SPOTIFY_CLIENT_ID``, ``GOOGLE_TOKEN_URL``, ...), so they are collected by a settings
source of their own rather than declared one field each. A ``*_CLIENT_ID``,
``*_CLIENT_SECRET`` or ``*_TOKEN_URL`` whose prefix no platform uses is refused: it is
almost always a typo that would otherwise leave a platform silently unconfigured.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from stream_app.catalog import CREDENTIAL_KEYS
from stream_app.errors import ConfigurationError
from stream_app.setting_rules import key_weakness, signing_secret_weakness, token_url_problem

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./token_refresh.db"
_PLACEHOLDER_KEYS = {"your-64-character-hex-key"}
# Other software's variables of the same shape that may share the environment (Azure
# workload identity sets AZURE_CLIENT_ID in every pod, for instance).
_FOREIGN_PREFIXES = frozenset({"azure", "aws", "oidc", "github"})
_PLATFORM_VARIABLE = re.compile(r"^(?P<prefix>[A-Z0-9_]+?)_(?P<what>CLIENT_ID|CLIENT_SECRET|TOKEN_URL|REVOCATION_URL)$")


class DatabaseUrl(SecretStr):
    """DATABASE_URL: shown with its password masked (``repr``, a settings dump, an error)."""

    def _display(self) -> str:
        try:
            url = make_url(self.get_secret_value())
        except (ArgumentError, ValueError):
            return "**********"
        if "@" in (url.host or ""):  # a password's unencoded '@': its tail was read as the host
            return "**********"
        return url.render_as_string(hide_password=True)


class ClientCredentials(BaseModel):
    model_config = ConfigDict(frozen=True)

    client_id: str
    client_secret: SecretStr


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, case_sensitive=False)

    database_url: DatabaseUrl = DatabaseUrl(DEFAULT_DATABASE_URL)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_topic_partitions: int = Field(default=4, ge=1)
    # Replicas of every topic the service creates: 1 suits the local single broker; production
    # clusters want 3, with KAFKA_MIN_INSYNC_REPLICAS=2 (acks=all then survives one broker down).
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1)
    kafka_app_id: str = "token-refresh"
    # How soon the group notices a dead worker and moves its partitions to the others.
    kafka_session_timeout_seconds: float = Field(default=60, ge=6)

    encryption_key: SecretStr
    # The secret behind the user-id hashes in logs; set it to keep them stable across key
    # rotations (by default it is derived from ENCRYPTION_KEY).
    log_hash_key: SecretStr | None = None
    # Keys being retired, comma-separated: still read, never written (`token-refresh rotate-keys`).
    retired_encryption_keys: SecretStr | None = None
    # Refuse seed-format (unbound) ciphertexts read from the table: set it once `rotate-keys`
    # reports no row left in the seed format (a copied one then decrypts in no other row).
    refuse_unbound_ciphertexts: bool = False

    topic_connection_created: str = "connection.created"
    topic_token_expiring: str = "token.expiring"
    topic_token_refreshed: str = "token.refreshed"
    topic_token_needs_reauth: str = "token.needs_reauth"
    topic_token_refresh_failed: str = "token.refresh_failed"
    topic_connection_disconnected: str = "connection.disconnected"
    topic_token_revoked: str = "token.revoked"
    # A worker's circuit breaker for a platform opened or closed (keyed by the platform).
    topic_provider_circuit_changed: str = "provider.circuit_changed"
    # A disconnect revokes the connection's tokens at a provider with an RFC 7009 endpoint
    # (stream_app.catalog: Google, Discord, X); off: the tokens are only wiped here.
    revoke_tokens_on_disconnect: bool = True

    refresh_buffer_seconds: float = Field(default=300, gt=0)
    # The buffer never exceeds this fraction of a token's lifetime.
    refresh_buffer_max_fraction: float = Field(default=0.5, gt=0, lt=1)
    scan_interval_seconds: float = Field(default=60, gt=0)
    # Scheduled retries of a connection whose refresh failed: base, 2x base, 4x ..., capped.
    failure_backoff_base_seconds: float = Field(default=60, gt=0)
    failure_backoff_max_seconds: float = Field(default=3600, gt=0)
    # Retries after the first call, for network errors, timeouts and 5xx (waits 1 s, 2 s, 4 s ...).
    refresh_max_attempts: int = Field(default=3, ge=0)
    retry_base_delay_seconds: float = Field(default=1, ge=0)
    retry_max_delay_seconds: float = Field(default=30, ge=0)
    retry_jitter_ratio: float = Field(default=0.3, ge=0, le=1)
    rate_limit_default_wait_seconds: float = Field(default=60, ge=0)
    http_timeout_seconds: float = Field(default=10, gt=0)
    max_refreshes_in_flight: int = Field(default=500, ge=1)
    platform_max_concurrency: int = Field(default=100, ge=1)
    # Per-platform circuit breaker: open when this share of at least CIRCUIT_MIN_CALLS calls in
    # the window failed (5xx, network); stay open for the cool-down, then try one call.
    circuit_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    circuit_min_calls: int = Field(default=20, ge=1)
    circuit_window_seconds: float = Field(default=60, gt=0)
    circuit_cool_down_seconds: float = Field(default=60, gt=0)
    # How long a refresh may hold a connection before others may take over; renewed in the
    # background every third of it while held. At least 3 x HTTP_TIMEOUT_SECONDS.
    refresh_lease_seconds: float = Field(default=120, ge=5)
    # How much longer than HTTP_TIMEOUT_SECONDS an answer is waited for from a provider whose
    # refresh tokens are single use: once the request is sent the token may be spent, and an
    # answer given up on takes the rotated one with it. Default: REFRESH_LEASE_SECONDS minus
    # 2 x HTTP_TIMEOUT_SECONDS, so the longest call ends inside a lease confirmed just before it.
    late_answer_seconds: float | None = Field(default=None, ge=0)
    # A provider's wait (Retry-After, a platform-wide pause, an open circuit) up to this long is
    # waited in memory; a longer one is recorded on the row and the scan brings it back.
    rate_limit_max_inline_wait_seconds: float = Field(default=5, ge=0)
    # get_valid_access_token waits this long for a refresh, then returns the stored token if
    # it is still valid, or raises TokenUnavailableError.
    on_demand_deadline_seconds: float = Field(default=3, gt=0)
    # Database connections per process: by default sized from MAX_REFRESHES_IN_FLIGHT.
    database_pool_size: int | None = Field(default=None, ge=1)
    database_max_overflow: int | None = Field(default=None, ge=0)
    database_pool_timeout_seconds: float = Field(default=30, gt=0)
    # get_valid_access_token answers a fresh token from a process-local cache of the sealed row
    # (ciphertexts, expiry, status) for at most this long; what another process changes (a
    # disconnect, a re-connect) is seen this late at most. 0 turns the cache off.
    token_cache_ttl_seconds: float = Field(default=5, ge=0, le=300)
    token_cache_max_entries: int = Field(default=10_000, ge=1)
    # Where fresh tokens that could not be stored yet are kept, sealed, until they are (replayed
    # at start). Keep it on a persistent volume.
    token_spool_dir: Path = Path("token_refresh_spool")
    scan_page_size: int = Field(default=2000, ge=1)
    # How long input event ids are remembered to recognise duplicates (replays, retries).
    processed_event_retention_days: float = Field(default=7, gt=0)
    # Provenance of input (docs/security.md): an input event dated later than now plus this is
    # dead-lettered (a future date would make every real re-connection look stale).
    event_max_clock_skew_seconds: float = Field(default=300, ge=0, le=86_400, allow_inf_nan=False)
    # A `manual` or `on_demand` request read from `token.expiring` is honoured at most once per
    # connection in this many seconds; the others are downgraded to `scheduled`.
    manual_refresh_min_interval_seconds: float = Field(default=60, gt=0, le=86_400, allow_inf_nan=False)
    # Producer keys, `<key id>:<secret>,...` (several at once for a rotation); a signature under
    # any of them is checked whenever present, and refused if wrong or under another id.
    producer_signing_keys: SecretStr | None = None
    require_signed_connection_events: bool = False
    # Refuse seed-format (unbound) ciphertexts in `connection.created`: only v2, row-bound ones.
    require_bound_input_tokens: bool = False
    # How long published outbox events are kept (at most ten years) before the leader's hourly
    # housekeeping deletes them; unpublished ones are never deleted.
    outbox_retention_hours: float = Field(default=24, gt=0, le=87_600, allow_inf_nan=False)

    # Test-only crash points (stream_app.failpoints), comma-separated.
    failpoints: str = ""

    # Bulk refresh jobs (POST /refresh/bulk, `token-refresh bulk-refresh`): refreshes per second
    # and platform of a job that names no rate, and of one platform in flight within a job.
    bulk_refresh_rate_per_platform: float = Field(default=5.0, ge=0.01, le=1000)
    bulk_refresh_concurrency: int = Field(default=4, ge=1, le=100)
    # How often an idle worker looks for a job; a running job's lease (another worker resumes it
    # this long after its runner stopped renewing it), renewed with its progress every save.
    bulk_refresh_poll_interval_seconds: float = Field(default=2.0, gt=0)
    bulk_refresh_lease_seconds: float = Field(default=30.0, gt=0)
    bulk_refresh_save_interval_seconds: float = Field(default=0.5, gt=0)
    # Connections read per keyset page of one platform; runs of a job that fail (the runner,
    # not its refreshes: the database away) before it is marked failed.
    bulk_refresh_page_size: int = Field(default=1000, ge=1, le=10_000)
    bulk_refresh_max_attempts: int = Field(default=5, ge=1)

    # The HTTP API (docs/api.md): /healthz, /readyz, /metrics, the admin endpoints and the
    # dashboard, served by the worker (and by `token-refresh api` alone); port 0 turns it off.
    http_host: str = "0.0.0.0"  # noqa: S104 - a container's API is reached from outside
    http_port: int = Field(default=9464, ge=0, le=65535)
    # Bearer tokens of the admin endpoints and the dashboard, comma-separated (several: a
    # rotation); none: every admin endpoint answers 401.
    admin_tokens: SecretStr | None = None
    # Bearer tokens of GET /connections/{user_id}/{platform}/token, which hands out access
    # tokens; none (the default): that endpoint does not exist.
    token_endpoint_tokens: SecretStr | None = None
    # User ids in the admin API's answers: "hashed" (as in the logs) or "raw".
    admin_user_ids: Literal["hashed", "raw"] = "hashed"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # The worker's event loop: uvloop (libuv; about 6% less worker CPU per refresh than asyncio's
    # own loop, docs/benchmarks.md), or "asyncio" (debugging, or where uvloop does not build).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Plain http:// token URLs off this machine: test deployments only (the sandbox in compose).
    allow_insecure_token_urls: bool = False
    credentials: dict[str, ClientCredentials] = Field(default_factory=dict)
    token_urls: dict[str, str] = Field(default_factory=dict)
    # <KEY>_REVOCATION_URL overrides of the catalog's revocation endpoints (sandboxes, tests).
    revocation_urls: dict[str, str] = Field(default_factory=dict)

    @field_validator("encryption_key", "log_hash_key")
    @classmethod
    def _key_is_64_random_hex(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value()
        if key in _PLACEHOLDER_KEYS:
            raise ValueError("is the documentation's placeholder; generate one with `token-refresh keygen`")
        weakness = key_weakness(key)
        if weakness is not None:
            raise ValueError(weakness)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: DatabaseUrl) -> DatabaseUrl:
        # SQLAlchemy's own errors quote the URL or a part of it (the password's, when it holds
        # an unencoded '@'), so none is passed on.
        try:
            url = make_url(value.get_secret_value())
        except (ArgumentError, ValueError):
            raise ValueError(
                "is not a database URL (dialect+driver://user:password@host:port/database; "
                "percent-encode @ : / in the password)"
            ) from None
        if "@" in (url.host or ""):
            raise ValueError("holds an '@' after the password's: percent-encode @ in the password as %40")
        return value

    @field_validator("retired_encryption_keys")
    @classmethod
    def _retired_keys_are_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in value.get_secret_value().split(","):
                cls._key_is_64_random_hex(SecretStr(key.strip()))
        return value

    @model_validator(mode="after")
    def _sasl_has_its_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL"):
            for name, value in (
                ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
            ):
                if value is None or not (value.get_secret_value() if isinstance(value, SecretStr) else value):
                    raise ValueError(f"{name}: is required with KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}")
        return self

    @model_validator(mode="after")
    def _token_urls_are_safe(self) -> Settings:
        for key, url in sorted(self.token_urls.items()):
            problem = token_url_problem(url, allow_insecure=self.allow_insecure_token_urls)
            if problem is not None:
                raise ValueError(f"{key.upper()}_TOKEN_URL: {problem}")
        return self

    @model_validator(mode="after")
    def _revocation_urls_are_safe(self) -> Settings:
        # A revocation sends a token (and, for most providers, the client secret): the token URLs' rule.
        for key, url in sorted(self.revocation_urls.items()):
            problem = token_url_problem(url, allow_insecure=self.allow_insecure_token_urls)
            if problem is not None:
                raise ValueError(f"{key.upper()}_REVOCATION_URL: {problem}")
        return self

    @model_validator(mode="after")
    def _lease_outlives_a_provider_call(self) -> Settings:
        if self.refresh_lease_seconds < 3 * self.http_timeout_seconds:
            raise ValueError(
                "REFRESH_LEASE_SECONDS: must be at least 3 x HTTP_TIMEOUT_SECONDS "
                f"({3 * self.http_timeout_seconds:g}), so a provider call always ends well inside the lease"
            )
        if self.longest_call_seconds > self.refresh_lease_seconds - self.http_timeout_seconds:
            raise ValueError(
                "LATE_ANSWER_SECONDS: HTTP_TIMEOUT_SECONDS plus it must end at least HTTP_TIMEOUT_SECONDS "
                f"inside REFRESH_LEASE_SECONDS (at most {self.refresh_lease_seconds - 2 * self.http_timeout_seconds:g})"
            )
        return self

    @property
    def longest_call_seconds(self) -> float:
        """The longest a provider call is waited for: a single-use provider's late answer included."""
        late = self.late_answer_seconds
        if late is None:
            late = self.refresh_lease_seconds - 2 * self.http_timeout_seconds
        return self.http_timeout_seconds + late

    def pool_size(self) -> tuple[int, int]:
        """(pool size, overflow): by default one connection per 25 refreshes in flight, 5 to 20."""
        size = self.database_pool_size or min(20, max(5, -(-self.max_refreshes_in_flight // 25)))
        overflow = self.database_max_overflow if self.database_max_overflow is not None else size // 2
        return size, overflow

    def log_hash_secret(self) -> str:
        return (self.log_hash_key or self.encryption_key).get_secret_value()

    def retired_keys(self) -> list[str]:
        if self.retired_encryption_keys is None:
            return []
        return [key.strip() for key in self.retired_encryption_keys.get_secret_value().split(",") if key.strip()]

    def signing_keys(self) -> dict[str, str]:
        """PRODUCER_SIGNING_KEYS as key id -> secret."""
        if self.producer_signing_keys is None:
            return {}
        entries = (entry.strip() for entry in self.producer_signing_keys.get_secret_value().split(","))
        return dict(entry.split(":", 1) for entry in entries if entry)

    @field_validator("producer_signing_keys")
    @classmethod
    def _signing_keys_are_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        seen: set[str] = set()
        # Entries are named by position, never by id: an entry without its "<id>:" is a secret
        # alone, which is a well-formed id too.
        for number, entry in enumerate((entry.strip() for entry in value.get_secret_value().split(",")), 1):
            key_id, colon, secret = entry.partition(":")
            if not colon or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", key_id):
                raise ValueError(f"entry {number}: entries are <key id>:<secret>, the id of 1-64 of A-Z a-z 0-9 . _ -")
            if key_id in seen:
                raise ValueError(f"entry {number}: its key id appears twice")
            seen.add(key_id)
            weakness = signing_secret_weakness(secret)
            if weakness is not None:
                raise ValueError(f"entry {number}: {weakness}")
        return value

    @field_validator("admin_tokens", "token_endpoint_tokens")
    @classmethod
    def _bearer_tokens_are_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for number, token in enumerate(value.get_secret_value().split(","), 1):
            if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{32,512}", token.strip()):
                raise ValueError(
                    f"entry {number}: a bearer token is 32-512 of A-Z a-z 0-9 . _ ~ + / = - "
                    "(generate one with `token-refresh keygen`)"
                )
        return value

    @model_validator(mode="after")
    def _bearer_scopes_apart(self) -> Settings:
        if set(self.bearer_tokens("admin")) & set(self.bearer_tokens("token")):
            raise ValueError("TOKEN_ENDPOINT_TOKENS: must not repeat a token of ADMIN_TOKENS (each scope its own)")
        return self

    def bearer_tokens(self, scope: Literal["admin", "token"]) -> list[str]:
        """ADMIN_TOKENS or TOKEN_ENDPOINT_TOKENS as a list."""
        value = self.admin_tokens if scope == "admin" else self.token_endpoint_tokens
        if value is None:
            return []
        return [token.strip() for token in value.get_secret_value().split(",") if token.strip()]

    @model_validator(mode="after")
    def _required_signatures_have_keys(self) -> Settings:
        if self.require_signed_connection_events and not self.signing_keys():
            raise ValueError("REQUIRE_SIGNED_CONNECTION_EVENTS: needs at least one key in PRODUCER_SIGNING_KEYS")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("kafka_min_insync_replicas")
    @classmethod
    def _insync_replicas_exist(cls, value: int | None, info: ValidationInfo) -> int | None:
        replicas = info.data.get("kafka_replication_factor")
        if value is not None and replicas is not None and value > replicas:
            # Every acks=all send would fail with NotEnoughReplicas.
            raise ValueError(
                "must not exceed KAFKA_REPLICATION_FACTOR: no topic has more in-sync replicas than replicas "
                "(production: 3 replicas, 2 in sync)"
            )
        return value

    def topic_names(self) -> dict[str, str]:
        """Default topic name -> configured topic name."""
        return {
            "connection.created": self.topic_connection_created,
            "token.expiring": self.topic_token_expiring,
            "token.refreshed": self.topic_token_refreshed,
            "token.needs_reauth": self.topic_token_needs_reauth,
            "token.refresh_failed": self.topic_token_refresh_failed,
            "connection.disconnected": self.topic_connection_disconnected,
            "token.revoked": self.topic_token_revoked,
            "provider.circuit_changed": self.topic_provider_circuit_changed,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            PlatformVariablesSource(settings_cls),
            file_secret_settings,
        )


class PlatformVariablesSource(PydanticBaseSettingsSource):
    """Collects ``<KEY>_CLIENT_ID`` / ``_CLIENT_SECRET`` / ``_TOKEN_URL`` / ``_REVOCATION_URL``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        env_file = self.config.get("env_file")
        variables: dict[str, str | None] = {}
        if isinstance(env_file, str | Path):
            variables.update(dotenv_values(env_file))
        variables.update(os.environ)
        return collect_platform_variables(variables)


def collect_platform_variables(variables: Mapping[str, str | None]) -> dict[str, Any]:
    found: dict[str, dict[str, str]] = {}
    for name, value in variables.items():
        match = _PLATFORM_VARIABLE.match(name.upper())
        if not match or value is None or value == "":
            continue
        prefix = match["prefix"].lower()
        if prefix not in CREDENTIAL_KEYS:
            if prefix in _FOREIGN_PREFIXES or prefix.startswith(("kafka_", "sasl_")):
                continue
            raise ConfigurationError(
                f"{name.upper()}: no platform uses the prefix {match['prefix']!r} "
                f"(known: {', '.join(k.upper() for k in CREDENTIAL_KEYS)})"
            )
        found.setdefault(prefix, {})[match["what"]] = value
    credentials: dict[str, dict[str, str]] = {}
    token_urls: dict[str, str] = {}
    revocation_urls: dict[str, str] = {}
    for prefix, values in found.items():
        if "TOKEN_URL" in values:
            token_urls[prefix] = values["TOKEN_URL"]
        if "REVOCATION_URL" in values:
            revocation_urls[prefix] = values["REVOCATION_URL"]
        has_id, has_secret = "CLIENT_ID" in values, "CLIENT_SECRET" in values
        if has_id != has_secret:
            missing = "CLIENT_SECRET" if has_id else "CLIENT_ID"
            raise ConfigurationError(f"{prefix.upper()}_{missing}: must be set together with its pair")
        if has_id:
            credentials[prefix] = {
                "client_id": values["CLIENT_ID"],
                "client_secret": values["CLIENT_SECRET"],
            }
    return {"credentials": credentials, "token_urls": token_urls, "revocation_urls": revocation_urls}


# Settings that were renamed: set, they would be ignored without a word.
RENAMED_SETTINGS = {"METRICS_HOST": "HTTP_HOST", "METRICS_PORT": "HTTP_PORT"}


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise ConfigurationError with one line naming the bad setting."""
    dotenv = dotenv_values(".env")
    for old, new in RENAMED_SETTINGS.items():
        if old in os.environ or old in dotenv:
            raise ConfigurationError(f"{old}: renamed {new} (it serves the whole HTTP API now); set {new} instead")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable, never echoing its value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in error["loc"]).upper() or "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required but not set"
        # A check across settings names them itself.
        problems.append(f"{name}: {message}" if error["loc"] else message)
    return "; ".join(problems)
