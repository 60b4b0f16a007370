"""The email channel's settings (``NOTIFY_EMAIL_*``). The channel is on when
``NOTIFY_EMAIL_SMTP_HOST`` is set; the rest is then checked at start-up."""

from __future__ import annotations

import ipaddress
import ssl
import string
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from stream_app.notify.channel_settings import ChannelSettings
from stream_app.notify.email.addresses import InvalidAddress, parse_address
from stream_app.notify.email.templates import TemplateProblem, Templates

Security = Literal["starttls", "tls", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
# The async drivers a URL without one gets (the notifier's own database URL works as is).
_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}


class EmailSettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_EMAIL_")

    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)  # by security: 587, 465, 25
    smtp_security: Security = "starttls"
    smtp_username: SecretStr | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # A PEM bundle of the CAs to trust instead of the system's (a private relay's CA).
    smtp_ca_file: Path | None = None
    # false: accept any certificate (a test relay); never the default.
    smtp_tls_verify: bool = True

    from_address: str | None = Field(default=None, validation_alias="NOTIFY_EMAIL_FROM")
    reply_to: str | None = None

    lookup_sql: str | None = None
    lookup_database_url: SecretStr | None = None  # default: the notifier's DATABASE_URL
    lookup_url: str | None = None
    lookup_bearer_token: SecretStr | None = None
    lookup_timeout_seconds: float = Field(default=10.0, gt=0, le=600)

    templates_dir: Path | None = None
    reconnect_url: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.smtp_host)

    @property
    def port(self) -> int:
        return self.smtp_port or DEFAULT_PORTS[self.smtp_security]

    @field_validator("smtp_host", "from_address", "reply_to", "lookup_sql", "lookup_url", "reconnect_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator(
        "smtp_port",
        "smtp_username",
        "smtp_password",
        "smtp_ca_file",
        "lookup_database_url",
        "lookup_bearer_token",
        "templates_dir",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty value is unset, as compose passes `${VAR:-}` (an empty username would log in as
        '', an empty folder would be the working directory)."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_ca_file")
    @classmethod
    def _readable_ca_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            ssl.create_default_context(cafile=str(value))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA certificates from {value} ({type(exc).__name__})") from None
        return value

    @field_validator("lookup_database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = async_database_url(value.get_secret_value())
        check_async_driver(url)
        return SecretStr(url)

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @model_validator(mode="after")
    def _complete_when_on(self) -> EmailSettings:
        if not self.enabled:
            return self
        if self.from_address is None:
            raise ValueError("NOTIFY_EMAIL_FROM is required when NOTIFY_EMAIL_SMTP_HOST is set")
        for variable, value in (("NOTIFY_EMAIL_FROM", self.from_address), ("NOTIFY_EMAIL_REPLY_TO", self.reply_to)):
            if value is not None:
                try:
                    parse_address(value)
                except InvalidAddress:
                    raise ValueError(
                        f"{variable} is not one email address (user@example.com or Name <user@example.com>)"
                    ) from None
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("NOTIFY_EMAIL_SMTP_USERNAME and NOTIFY_EMAIL_SMTP_PASSWORD are set together or not at all")
        if self.smtp_username is not None and self.smtp_security == "none":
            raise ValueError(
                "NOTIFY_EMAIL_SMTP_SECURITY=none would send NOTIFY_EMAIL_SMTP_PASSWORD in clear: use starttls or tls"
            )
        if (self.lookup_sql is None) == (self.lookup_url is None):
            raise ValueError(
                "set exactly one of NOTIFY_EMAIL_LOOKUP_SQL and NOTIFY_EMAIL_LOOKUP_URL (how to find a user's address)"
            )
        if self.lookup_sql is not None:
            _check_lookup_sql(self.lookup_sql)
        if self.lookup_url is not None:
            _check_url_template("NOTIFY_EMAIL_LOOKUP_URL", self.lookup_url, "user_id")
            if self.lookup_bearer_token is not None and not _private_channel(self.lookup_url):
                raise ValueError(
                    "NOTIFY_EMAIL_LOOKUP_URL must be https:// (or a loopback address) when "
                    "NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN is set: the token would travel in clear"
                )
        if self.reconnect_url is not None:
            _check_url_template("NOTIFY_EMAIL_RECONNECT_URL", self.reconnect_url, "platform", required=False)
        try:
            Templates(self.templates_dir, reconnect_url=self.reconnect_url).check()
        except TemplateProblem as exc:
            where = "NOTIFY_EMAIL_TEMPLATES_DIR" if self.templates_dir else "email template"
            raise ValueError(f"{where}: {exc}") from None
        return self


def async_database_url(url: str) -> str:
    """``url`` with an async driver: ``postgresql://`` becomes ``postgresql+asyncpg://``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a database URL") from None
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


def check_async_driver(url: str) -> None:
    """ValueError (never quoting the URL) unless ``url``'s driver is an installed async one: the
    lookup's engine is made at start, and a sync or missing driver would stop it with a traceback."""
    parsed = make_url(url)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"unknown database dialect {parsed.drivername!r}") from None
    if not getattr(dialect, "is_async", False):
        raise ValueError(f"{parsed.drivername!r} is not an async driver (postgresql+asyncpg://, sqlite+aiosqlite://)")
    try:
        dialect.import_dbapi()
    except ImportError:
        raise ValueError(f"the driver of {parsed.drivername!r} is not installed") from None


def _check_lookup_sql(sql: str) -> None:
    binds = set(text(sql).compile().params)
    if binds != {"user_id"}:
        raise ValueError("NOTIFY_EMAIL_LOOKUP_SQL must have exactly one bind parameter, :user_id")


def _private_channel(url_template: str) -> bool:
    parts = urlsplit(url_template)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").lower()
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url_template(variable: str, template: str, field: str, *, required: bool = True) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        raise ValueError(f"{variable} is not a valid template (a stray brace?)") from None
    if fields - {field} or (required and field not in fields):
        need = "must contain {" + field + "}" if required else "may only contain {" + field + "}"
        raise ValueError(f"{variable} {need} and no other placeholder")
    parts = urlsplit(template.replace("{" + field + "}", "x"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{variable} must be an http(s) URL")
