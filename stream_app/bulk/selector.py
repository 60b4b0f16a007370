"""Which connections a bulk refresh job refreshes: a selector, and the SQL it stands for."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import ColumnElement, and_, or_

from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.db.models import ConnectionRow

# The statuses a forced (manual) refresh acts on; needs_reauth and disconnected rows have no
# grant left to refresh, so selecting them could only count skips.
SelectableStatus = Literal["connected", "token_expired", "error"]
SELECTABLE_STATUSES: tuple[SelectableStatus, ...] = ("connected", "token_expired", "error")
_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ERROR_CLASS = re.compile(r"^[a-z0-9_.-]{1,64}$")


# The longest expiring_within (ten years): longer selects every token, and overflows a date.
MAX_EXPIRING_WITHIN = timedelta(days=3660)


def parse_duration(value: Any) -> Any:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` as a timedelta; anything else is left to pydantic
    (ISO 8601 ``PT1H``, a number of seconds, a timedelta)."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"] or "s"]
        if seconds > MAX_EXPIRING_WITHIN.total_seconds():  # a timedelta that large does not even exist
            raise ValueError(f"at most {MAX_EXPIRING_WITHIN.days} days")
        return timedelta(seconds=seconds)
    return value


class BulkSelector(BaseModel):
    """The connections a bulk refresh job selects (every condition given must hold)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    platform: str | None = Field(default=None, description="A platform key; every refreshable platform if omitted.")
    statuses: list[SelectableStatus] = Field(
        default_factory=lambda: list(SELECTABLE_STATUSES),
        description="Connection statuses to select (default: connected, token_expired and error).",
    )
    expiring_within: timedelta | None = Field(
        default=None,
        description="Only tokens expiring within this long of the job's creation (e.g. '1h', 'PT30M', 3600); "
        "tokens already expired included.",
    )
    last_error_class: str | None = Field(
        default=None,
        description="Only connections whose last failure had this error class (the code at the head of "
        "last_sync_error, e.g. 'invalid_client').",
    )

    @field_validator("platform")
    @classmethod
    def _known_platform(cls, value: str | None) -> str | None:
        if value is not None and value not in REFRESHABLE_PLATFORMS:
            raise ValueError(f"not a refreshable platform (one of {', '.join(REFRESHABLE_PLATFORMS)})")
        return value

    @field_validator("statuses")
    @classmethod
    def _some_statuses(cls, value: list[SelectableStatus]) -> list[SelectableStatus]:
        if not value:
            raise ValueError("select at least one status")
        return sorted(set(value), key=SELECTABLE_STATUSES.index)

    @field_validator("expiring_within", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("expiring_within")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value.total_seconds() <= 0:
            raise ValueError("must be a positive duration")
        if value is not None and value > MAX_EXPIRING_WITHIN:  # the job's creation plus it must be a date
            raise ValueError(f"at most {MAX_EXPIRING_WITHIN.days} days")
        return value

    @field_validator("last_error_class")
    @classmethod
    def _error_class(cls, value: str | None) -> str | None:
        if value is not None and not _ERROR_CLASS.match(value):
            raise ValueError("an error class is lower-case letters, digits and _.- (at most 64)")
        return value

    def platforms(self) -> tuple[str, ...]:
        return (self.platform,) if self.platform else REFRESHABLE_PLATFORMS

    def conditions(self, created_at: datetime) -> list[ColumnElement[bool]]:
        """What a row must satisfy, platform aside (``created_at``: the job's creation, naive UTC,
        from which ``expiring_within`` counts)."""
        row = ConnectionRow
        found: list[ColumnElement[bool]] = [row.status.in_(self.statuses)]
        if self.expiring_within is not None:
            found.append(row.token_expires_at <= created_at + self.expiring_within)
        if self.last_error_class is not None:
            code = self.last_error_class
            found.append(or_(row.last_sync_error == code, row.last_sync_error.startswith(code + ":", autoescape=True)))
        return found

    def matches(self, created_at: datetime) -> ColumnElement[bool]:
        return and_(ConnectionRow.platform.in_(self.platforms()), *self.conditions(created_at))
