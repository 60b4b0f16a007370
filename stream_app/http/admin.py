"""Admin endpoints (ADMIN_TOKENS): a manual refresh, a user's platforms' health, the connection
listing; and the token endpoint (TOKEN_ENDPOINT_TOKENS, absent unless configured). No answer
holds a token except the token endpoint's; user ids are hashed unless ADMIN_USER_IDS=raw."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import Select, select

from stream_app.catalog import is_known
from stream_app.clock import to_aware_utc, utc_now
from stream_app.crypto import UnknownKeyError
from stream_app.db import ConnectionStatus
from stream_app.db.models import ConnectionRow
from stream_app.errors import TokenUnavailableError
from stream_app.http.auth import require_admin, require_token_scope
from stream_app.providers.wording import error_class_of
from stream_app.service import TokenService

admin = APIRouter(dependencies=[Depends(require_admin)], tags=["admin"])
tokens = APIRouter(dependencies=[Depends(require_token_scope)], tags=["tokens"])

MAX_PAGE = 500
# The longest `expiring_within` (ten years): any longer is every token, and a date beyond 9999.
MAX_WINDOW_SECONDS = 10 * 366 * 86_400


class RefreshAnswer(BaseModel):
    outcome: Literal["refreshed", "skipped", "deferred", "needs_reauth", "failed"]
    reason: str
    status: str | None = Field(description="The connection's status after the refresh")
    token_expires_at: datetime | None


class PlatformHealth(BaseModel):
    platform: str
    status: str
    token_expires_at: datetime | None
    expires_in_seconds: int | None = Field(description="Negative once expired")
    last_refreshed_at: datetime | None
    last_sync_status: str | None
    last_error_class: str | None = Field(description="The provider's error code or our class of the last failure")
    needs_reauth: bool


class UserPlatforms(BaseModel):
    user: str = Field(description="The user id as ADMIN_USER_IDS says: hashed (as in the logs) or raw")
    platforms: list[PlatformHealth]


class ConnectionSummary(BaseModel):
    user: str
    platform: str
    status: str
    token_expires_at: datetime | None
    last_refreshed_at: datetime | None
    last_error_class: str | None
    consecutive_failures: int


class ConnectionPage(BaseModel):
    connections: list[ConnectionSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"


def _service(request: Request) -> TokenService:
    service: TokenService = request.app.state.service
    return service


def _known_platform(platform: str) -> str:
    if not is_known(platform):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown platform {platform!r}")
    return platform


def _shown_user(request: Request, user_id: uuid.UUID) -> str:
    service = _service(request)
    return str(user_id) if service.settings.admin_user_ids == "raw" else service.hash_user_id(user_id)


def _error_class(row: ConnectionRow) -> str | None:
    return error_class_of(row.last_sync_error) if row.last_sync_status == "error" else None


@admin.post(
    "/connections/{user_id}/{platform}/refresh",
    response_model=RefreshAnswer,
    summary="Refresh one connection now, whatever its expiry (manual)",
)
async def refresh_connection(request: Request, user_id: uuid.UUID, platform: str) -> RefreshAnswer:
    _known_platform(platform)
    service = _service(request)
    try:
        result = await service.engine.refresh(user_id, platform, trigger="manual")
    except UnknownKeyError:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the stored token is under a key id this process lacks"
        ) from None
    if result.reason == "not_found":
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such connection")
    async with service.database.sessions() as session:
        row = await session.scalar(_one(user_id, platform))
    return RefreshAnswer(
        outcome=result.outcome,
        reason=result.reason,
        status=row.status if row else None,
        token_expires_at=to_aware_utc(row.token_expires_at) if row else None,
    )


@admin.get(
    "/platforms/health",
    response_model=UserPlatforms,
    summary="Each platform of a user: status, token expiry, last error class (never a token)",
)
async def platforms_health(request: Request, user_id: uuid.UUID) -> UserPlatforms:
    service = _service(request)
    async with service.database.sessions() as session:
        rows = (
            await session.scalars(
                select(ConnectionRow).where(ConnectionRow.user_id == user_id).order_by(ConnectionRow.platform)
            )
        ).all()
    now = utc_now()
    return UserPlatforms(
        user=_shown_user(request, user_id),
        platforms=[
            PlatformHealth(
                platform=row.platform,
                status=row.status or ConnectionStatus.CONNECTED,
                token_expires_at=to_aware_utc(row.token_expires_at),
                expires_in_seconds=int((row.token_expires_at - now).total_seconds()) if row.token_expires_at else None,
                last_refreshed_at=to_aware_utc(row.last_refreshed_at),
                last_sync_status=row.last_sync_status,
                last_error_class=_error_class(row),
                needs_reauth=row.status == ConnectionStatus.NEEDS_REAUTH,
            )
            for row in rows
        ],
    )


@admin.get("/connections", response_model=ConnectionPage, summary="Connections, filtered, a page at a time")
async def list_connections(
    request: Request,
    platform: str | None = None,
    status_: Annotated[list[ConnectionStatus] | None, Query(alias="status")] = None,
    expiring_within: Annotated[
        int | None,
        Query(
            ge=0, le=MAX_WINDOW_SECONDS, description="Seconds: only tokens expiring within this (expired ones included)"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ConnectionPage:
    # Paged by the row's own id (random, not the user's): a cursor hands out no user id.
    query = select(ConnectionRow).order_by(ConnectionRow.id).limit(limit + 1)
    if platform is not None:
        query = query.where(ConnectionRow.platform == _known_platform(platform))
    if status_:
        query = query.where(ConnectionRow.status.in_([str(s) for s in status_]))
    if expiring_within is not None:
        query = query.where(ConnectionRow.token_expires_at <= utc_now() + timedelta(seconds=expiring_within))
    if cursor is not None:
        query = query.where(ConnectionRow.id > _decode_cursor(cursor))
    service = _service(request)
    async with service.database.sessions() as session:
        rows = (await session.scalars(query)).all()
    page, more = rows[:limit], len(rows) > limit
    return ConnectionPage(
        connections=[
            ConnectionSummary(
                user=_shown_user(request, row.user_id),
                platform=row.platform,
                status=row.status or ConnectionStatus.CONNECTED,
                token_expires_at=to_aware_utc(row.token_expires_at),
                last_refreshed_at=to_aware_utc(row.last_refreshed_at),
                last_error_class=_error_class(row),
                consecutive_failures=row.consecutive_failures,
            )
            for row in page
        ],
        next_cursor=_encode_cursor(page[-1].id) if more else None,
    )


@tokens.get(
    "/connections/{user_id}/{platform}/token",
    response_model=AccessToken,
    summary="A valid access token (refreshed first if due), for services in other languages",
    responses={404: {"description": "No usable connection: missing, needs re-auth, or refresh failed"}},
)
async def access_token(request: Request, response: Response, user_id: uuid.UUID, platform: str) -> AccessToken:
    # An access token is never to be kept by a cache on the way (RFC 6749 5.1).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    _known_platform(platform)
    try:
        token = await _service(request).get_valid_access_token(user_id, platform)
    except (TokenUnavailableError, UnknownKeyError):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no valid token can be had right now") from None
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no usable connection")
    return AccessToken(access_token=token)


def _one(user_id: uuid.UUID, platform: str) -> Select[ConnectionRow]:
    return select(ConnectionRow).where(ConnectionRow.user_id == user_id, ConnectionRow.platform == platform)


def _encode_cursor(row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(row_id.bytes).decode().rstrip("=")


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "cursor: not one this API gave") from None
