"""Outcome events as the service publishes them, for the notifier's tests."""

from __future__ import annotations

import uuid
from datetime import datetime

from schemas import TokenNeedsReauth, TokenRefreshed


def needs_reauth(user_id: uuid.UUID | None = None, at: datetime | None = None) -> TokenNeedsReauth:
    return TokenNeedsReauth(
        user_id=user_id or uuid.uuid4(),
        platform="spotify",
        reason="invalid_grant",
        error="invalid_grant",
        **({"occurred_at": at} if at else {}),
    )


def refreshed(user_id: uuid.UUID | None = None, at: datetime | None = None) -> TokenRefreshed:
    return TokenRefreshed(
        user_id=user_id or uuid.uuid4(),
        platform="spotify",
        token_expires_at=None,
        expires_in=3600,
        attempts=1,
        duration_ms=12,
        refresh_token_rotated=False,
        reason="scheduled",
        **({"occurred_at": at} if at else {}),
    )
