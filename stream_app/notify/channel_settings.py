"""What every channel's settings share: read from the environment and `.env`, frozen, and an
error that names the variable but never repeats its value (secrets included)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ChannelSettings(BaseSettings):
    """A channel's settings; a subclass sets its ``env_prefix`` (``NOTIFY_<CHANNEL>_``)."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, case_sensitive=False, hide_input_in_errors=True
    )
