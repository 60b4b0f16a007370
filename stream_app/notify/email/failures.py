"""How a failed SMTP send is treated: retried, or given up (``DeliveryFailed.permanent``).

Retried: what holds for every message alike and heals by itself or once fixed: the relay
unreachable, a timeout, a TLS or authentication failure, any 4xx reply, a 5xx to the
configured sender or greeting. Permanent: a 5xx about this message: its recipient (550 no such
mailbox) or its content. Reasons carry the reply's codes, never the server's text (it often
quotes the address) nor an address in full, nor a credential.
"""

from __future__ import annotations

import re
import ssl

import aiosmtplib

from stream_app.notify.channel import DeliveryFailed
from stream_app.notify.email.addresses import mask

_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def smtp_failure(exc: Exception, recipient: str, server: str) -> DeliveryFailed:
    """``exc`` (an aiosmtplib error or an OSError) as a DeliveryFailed; ``server`` is
    ``host:port`` (configuration, not personal data)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _reply(exc, f"the SMTP server refused the recipient {mask(recipient)}")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return DeliveryFailed(f"SMTP authentication failed ({_codes(exc)})")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return DeliveryFailed(f"the SMTP server refused the sender NOTIFY_EMAIL_FROM ({_codes(exc)})")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPHeloError):
        return DeliveryFailed(f"the SMTP server {server} refused the session ({_codes(exc)})")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply(exc, "the SMTP server refused the message")
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
        # aiosmtplib's own words (no STARTTLS, no AUTH, no SMTPUTF8), not the server's
        return DeliveryFailed(f"the SMTP server {server} cannot be used as configured ({_library_text(exc)})")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return DeliveryFailed(f"timed out talking to the SMTP server {server}")
    tls = _tls_error(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return DeliveryFailed(
            f"the SMTP server {server}'s certificate is not trusted ({tls.verify_message}); "
            "see NOTIFY_EMAIL_SMTP_CA_FILE"
        )
    if tls is not None:
        return DeliveryFailed(f"TLS with the SMTP server {server} failed ({type(tls).__name__})")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return DeliveryFailed(f"the SMTP server {server} closed the connection")
    cause = exc.__cause__ if isinstance(exc, aiosmtplib.SMTPConnectError) and exc.__cause__ else exc
    return DeliveryFailed(f"cannot reach the SMTP server {server} ({type(cause).__name__})")


def _reply(exc: aiosmtplib.SMTPResponseException, what: str) -> DeliveryFailed:
    return DeliveryFailed(f"{what} ({_codes(exc)})", permanent=500 <= exc.code < 600)


def _codes(exc: aiosmtplib.SMTPResponseException) -> str:
    enhanced = _ENHANCED_STATUS.match(exc.message or "")
    return f"{exc.code} {enhanced.group(1)}" if enhanced else str(exc.code)


def _library_text(exc: Exception) -> str:
    return " ".join(str(exc).split())[:120]


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(5):  # the error, and what it was raised from
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
