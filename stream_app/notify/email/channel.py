"""The email channel: tells a user their connection needs re-authorising, and that it works
again, through SMTP (one connection per message)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any

import aiosmtplib
import jinja2

from stream_app.notify.channel import DeliveryFailed, Route
from stream_app.notify.email.addresses import InvalidAddress, mask, parse_address
from stream_app.notify.email.failures import smtp_failure
from stream_app.notify.email.lookup import AddressLookup
from stream_app.notify.email.message import build_message
from stream_app.notify.email.settings import EmailSettings
from stream_app.notify.email.templates import EmailKind, Templates
from stream_app.notify.notice import Notice

log = logging.getLogger(__name__)

_ROUTES: dict[str, EmailKind] = {"needs_reauth": "needs_reauth", "recovered": "recovered"}


class EmailChannel:
    name = "email"
    user_facing = True
    digest_window_seconds = 0.0

    def __init__(self, settings: EmailSettings, lookup: AddressLookup, templates: Templates) -> None:
        if not settings.smtp_host or not settings.from_address:
            raise ValueError("the email channel needs NOTIFY_EMAIL_SMTP_HOST and NOTIFY_EMAIL_FROM")
        self._lookup = lookup
        self._templates = templates
        self._sender = parse_address(settings.from_address)
        self._reply_to = parse_address(settings.reply_to) if settings.reply_to else None
        self._server = f"{settings.smtp_host}:{settings.port}"
        self._smtp: dict[str, Any] = {
            "hostname": settings.smtp_host,
            "port": settings.port,
            "use_tls": settings.smtp_security == "tls",
            "start_tls": settings.smtp_security == "starttls",  # required, never opportunistic
            "tls_context": tls_context(settings),
            "timeout": settings.smtp_timeout_seconds,
        }
        if settings.smtp_username is not None and settings.smtp_password is not None:
            self._smtp["username"] = settings.smtp_username.get_secret_value()
            self._smtp["password"] = settings.smtp_password.get_secret_value()

    def route(self, notice: Notice) -> Route:
        return Route.NOW if notice.kind in _ROUTES and notice.user_id is not None else Route.SKIP

    async def send(self, notice: Notice) -> None:
        kind = _ROUTES.get(notice.kind)
        if kind is None or notice.user_id is None:
            raise DeliveryFailed(f"the email channel does not send {notice.kind} notices", permanent=True)
        found = await self._lookup.find(notice.user_id)
        if found is None:
            raise DeliveryFailed("no email address for the user (the address lookup found none)", permanent=True)
        try:
            recipient = parse_address(found.address, found.name)
        except InvalidAddress:
            raise DeliveryFailed(
                f"the user's address {mask(found.address)} is not a valid email address", permanent=True
            ) from None
        reason = notice.event.get("reason")
        try:
            rendered = self._templates.render(
                kind,
                notice.platform,
                occurred_at=notice.occurred_at,
                user_name=recipient.display_name or None,
                reason=reason if isinstance(reason, str) else None,
            )
        except jinja2.TemplateError as exc:
            raise DeliveryFailed(f"the email's template failed ({type(exc).__name__})", permanent=True) from None
        message = build_message(
            rendered, notice_id=notice.notice_id, sender=self._sender, recipient=recipient, reply_to=self._reply_to
        )
        try:
            await aiosmtplib.send(
                message, sender=self._sender.addr_spec, recipients=[recipient.addr_spec], **self._smtp
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise smtp_failure(exc, recipient.addr_spec, self._server) from None

    async def send_digest(self, platform: str, notices: Sequence[Notice]) -> None:
        raise NotImplementedError("the email channel sends no digests")

    async def aclose(self) -> None:
        await self._lookup.aclose()


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    """The system's trust store, or NOTIFY_EMAIL_SMTP_CA_FILE's; verification off only when
    NOTIFY_EMAIL_SMTP_TLS_VERIFY=false says so."""
    if settings.smtp_security == "none":
        return None
    context = ssl.create_default_context(cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None)
    if not settings.smtp_tls_verify:
        log.warning("email channel: NOTIFY_EMAIL_SMTP_TLS_VERIFY=false, the SMTP server's certificate is not checked")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
