"""One notice's email: headers and a text + HTML multipart/alternative body."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from stream_app.notify.email.templates import Rendered


def message_id(notice_id: uuid.UUID, sender: Address) -> str:
    """The same notice always gets the same Message-ID, so a re-send after a crash (the core
    delivers at least once) is recognisable as the same message."""
    return f"<{notice_id}.notify@{sender.domain}>"


def build_message(
    rendered: Rendered,
    *,
    notice_id: uuid.UUID,
    sender: Address,
    recipient: Address,
    reply_to: Address | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    if reply_to is not None:
        message["Reply-To"] = reply_to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id(notice_id, sender)
    # RFC 3834: sent by software, not a person; auto-responders (and Exchange's) stay quiet.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
