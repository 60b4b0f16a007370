"""The signed webhook channel: every notice, as it happens, POSTed to the product's endpoint with
Standard Webhooks headers."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from stream_app.notify.channel import DeliveryFailed, Route, http_failure
from stream_app.notify.hidden_url import HiddenUrl
from stream_app.notify.notice import Notice, NoticeKind
from stream_app.notify.webhook.settings import WebhookSettings
from stream_app.notify.webhook.signing import signature_header

USER_AGENT = "token-refresh-notify/0.1 (webhook)"
RECOVERED_TYPE = "connection.recovered"
# When an event lacks its event_type (it never should): the type its kind comes from.
_TYPE_OF_KIND: dict[NoticeKind, str] = {
    "refreshed": "token.refreshed",
    "needs_reauth": "token.needs_reauth",
    "refresh_failed": "token.refresh_failed",
    "revoked": "token.revoked",
    "recovered": RECOVERED_TYPE,
    "circuit_opened": "provider.circuit_changed",
    "circuit_closed": "provider.circuit_changed",
}
# Sealed tokens of a connection.created envelope: the core never keeps them; never sent anyway.
_NEVER_SENT = frozenset({"access_token", "refresh_token"})


def webhook_type(notice: Notice) -> str:
    if notice.kind == "recovered":
        return RECOVERED_TYPE
    event_type = notice.event.get("event_type")
    return event_type if isinstance(event_type, str) and event_type else _TYPE_OF_KIND[notice.kind]


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def webhook_body(notice: Notice) -> bytes:
    """The request body: ``{"type", "timestamp", "data"}`` as compact JSON. ASCII only (non-ASCII
    characters escaped), so that a consumer cannot break the signature by decoding it wrongly."""
    data = {key: value for key, value in notice.event.items() if key not in _NEVER_SENT}
    payload = {"type": webhook_type(notice), "timestamp": rfc3339(notice.occurred_at), "data": data}
    return json.dumps(payload, separators=(",", ":"), default=_json_value).encode("ascii")


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def endpoint_label(url: str) -> str:
    """The endpoint as reasons name it: scheme, host and port; never its path, query or user."""
    parts = urlsplit(url)
    return f"webhook endpoint {parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class WebhookChannel:
    name = "webhook"
    user_facing = False
    digest_window_seconds = 0.0

    def __init__(self, settings: WebhookSettings, *, clock: Callable[[], float] = time.time) -> None:
        if settings.url is None:
            raise ValueError("the webhook channel needs NOTIFY_WEBHOOK_URL")
        self._url = settings.url
        self._label = endpoint_label(settings.url)
        self._keys = settings.signing_keys
        self._kinds = settings.sent_kinds
        self._timeout = settings.timeout_seconds
        self._clock = clock
        # Redirects are not followed: the signed body would go wherever a Location says.
        self._client = httpx.AsyncClient(timeout=settings.timeout_seconds, follow_redirects=False)
        self._log_filter = HiddenUrl(settings.url, f"<{self._label}>").install()

    def route(self, notice: Notice) -> Route:
        # A connection.created reaches the notifier only as a sign of recovery (the product
        # published it itself): sent as connection.recovered when it mends an announced problem.
        if notice.kind != "recovered" and notice.event.get("event_type") == "connection.created":
            return Route.SKIP
        return Route.NOW if notice.kind in self._kinds else Route.SKIP

    def signed_request(self, notice: Notice) -> tuple[dict[str, str], bytes]:
        """The headers and body of the request that tells of ``notice``, signed now."""
        body = webhook_body(notice)
        msg_id = str(notice.notice_id)
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(self._keys, msg_id, timestamp, body),
        }
        return headers, body

    async def send(self, notice: Notice) -> None:
        headers, body = self.signed_request(notice)
        try:
            # One deadline for the whole exchange (httpx's timeout is per read, so a slow drip
            # of bytes would outlast it). The answer's body is never read.
            async with asyncio.timeout(self._timeout):
                async with self._client.stream("POST", self._url, content=body, headers=headers) as response:
                    status, answer_headers = response.status_code, response.headers
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryFailed(f"{self._label} did not answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            # The exception's text may quote the URL: only its class (and a TLS error's code) is told.
            raise DeliveryFailed(f"{self._label} unreachable ({_failure_class(exc)})") from None
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise DeliveryFailed(
                f"{self._label} answered a redirect (HTTP {status}); redirects are not followed "
                "(the signed body would go elsewhere): set NOTIFY_WEBHOOK_URL to the endpoint's new address",
                permanent=True,
            )
        raise http_failure(self._label, status, _lower(answer_headers))

    async def send_digest(self, platform: str, notices: Sequence[Notice]) -> None:
        raise NotImplementedError("the webhook channel sends every notice as it happens")

    async def aclose(self) -> None:
        self._log_filter.remove()
        await self._client.aclose()


def _failure_class(exc: BaseException) -> str:
    """``ConnectError``, or ``ConnectError, TLS CERTIFICATE_VERIFY_FAILED`` when TLS failed."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return f"{type(exc).__name__}, TLS {cause.reason}"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}
