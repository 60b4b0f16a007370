"""The Slack channel: operators' alerts through an incoming webhook.

A refresh that failed for good and a provider's circuit opening or closing are posted at once;
re-auths and recoveries are gathered into one digest per platform per NOTIFY_SLACK_DIGEST_MINUTES.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from stream_app.notify.channel import DeliveryFailed, Route, http_failure
from stream_app.notify.hidden_url import HiddenUrl
from stream_app.notify.notice import Notice
from stream_app.notify.slack import blocks
from stream_app.notify.slack.settings import SlackSettings

_WHAT = "Slack"
_MAX_BODY = 1024  # of an answer's body, read for Slack's error code
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # Slack's errors: invalid_payload, no_service, ...


class SlackChannel:
    name: str = "slack"
    user_facing: bool = False

    def __init__(self, settings: SlackSettings, *, clock: Callable[[], datetime] | None = None) -> None:
        if settings.webhook_url is None:
            raise ValueError("NOTIFY_SLACK_WEBHOOK_URL is not set")
        self.digest_window_seconds: float = settings.digest_window_seconds
        self._url = settings.webhook_url.get_secret_value()
        self._timeout = settings.timeout_seconds
        self._mention = settings.mention
        self._dashboard_url = settings.dashboard_url
        key = settings.user_hash_key.get_secret_value() if settings.user_hash_key is not None else None
        self._user_ref = blocks.user_reference(key)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._client = httpx.AsyncClient(timeout=settings.timeout_seconds, follow_redirects=False)
        self._log_filter = HiddenUrl(self._url, "<slack webhook>").install()

    def route(self, notice: Notice) -> Route:
        if notice.kind == "refresh_failed":
            return Route.NOW if notice.event.get("will_retry") is False else Route.SKIP
        if notice.kind in ("circuit_opened", "circuit_closed"):
            # An outage is told once: when the platform's first worker opens, and when its last closes.
            return Route.NOW if notice.platform_wide else Route.SKIP
        if notice.kind in ("needs_reauth", "recovered"):
            return Route.DIGEST
        return Route.SKIP

    async def send(self, notice: Notice) -> None:
        if notice.kind == "refresh_failed":
            payload = blocks.refresh_failed(
                notice, user_ref=self._user_ref, mention=self._mention, dashboard_url=self._dashboard_url
            )
        elif notice.kind in ("circuit_opened", "circuit_closed"):
            payload = blocks.circuit_changed(notice, mention=self._mention, dashboard_url=self._dashboard_url)
        elif notice.kind in ("needs_reauth", "recovered"):  # a digest's kind, sent alone: a digest of one
            await self.send_digest(notice.platform, [notice])
            return
        else:
            raise DeliveryFailed(f"the Slack channel does not send {notice.kind} notices", permanent=True)
        await self._post(payload)

    async def send_digest(self, platform: str, notices: Sequence[Notice]) -> None:
        payload = blocks.digest(
            platform,
            notices,
            window_seconds=self.digest_window_seconds,
            now=self._clock(),
            user_ref=self._user_ref,
            dashboard_url=self._dashboard_url,
        )
        if payload is not None:
            await self._post(payload)

    async def aclose(self) -> None:
        self._log_filter.remove()
        await self._client.aclose()

    async def _post(self, payload: dict[str, Any]) -> None:
        """POST the payload; Slack answers 200 "ok". No failure's reason holds the URL (nor does its
        traceback: httpx's errors carry the request, so they are not chained)."""
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.stream("POST", self._url, json=payload) as response:
                    if response.is_success:
                        return
                    body = await _head(response)
        except TimeoutError:
            raise DeliveryFailed(f"{_WHAT} did not answer within {self._timeout:g} s") from None
        except httpx.TimeoutException:
            raise DeliveryFailed(f"{_WHAT} did not answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{_WHAT} unreachable ({type(exc).__name__})") from None
        if response.is_redirect:  # an incoming webhook does not redirect; retrying will not change it
            raise DeliveryFailed(
                f"{_WHAT} answered HTTP {response.status_code} (redirects are not followed)", permanent=True
            )
        failure = http_failure(_WHAT, response.status_code, response.headers)
        code = _error_code(body)
        if code is not None:
            failure = DeliveryFailed(
                f"{failure.reason}: {code}", permanent=failure.permanent, retry_after=failure.retry_after
            )
        raise failure


async def _head(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _MAX_BODY:
            break
    return body[:_MAX_BODY]


def _error_code(body: bytes) -> str | None:
    """Slack's short error string (``no_service``), or None when the body is anything else: a
    body that is not one such word is not repeated (it may be a proxy's page, or echo the URL)."""
    text = body.decode("utf-8", "replace").strip()
    return text if _ERROR_CODE.match(text) else None
