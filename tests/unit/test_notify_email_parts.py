"""The email channel's parts: addresses read strictly and shown masked, the templates (defaults,
per-platform overrides, escaping), the message's headers, and how SMTP failures are classified."""

from __future__ import annotations

import ssl
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from stream_app.notify.email.addresses import InvalidAddress, mask, parse_address
from stream_app.notify.email.failures import smtp_failure
from stream_app.notify.email.message import build_message
from stream_app.notify.email.templates import Templates

MOMENT = datetime(2026, 11, 30, 21, 5, tzinfo=UTC)
ALICE = "alice.liddell@example.org"


def test_addresses_are_masked() -> None:
    assert mask(ALICE) == "a***@example.org"
    assert mask("garbage") == "***"


def test_an_address_with_a_display_name() -> None:
    parsed = parse_address('"Token Service" <noreply@example.com>')
    assert (parsed.display_name, parsed.addr_spec) == ("Token Service", "noreply@example.com")
    named = parse_address(ALICE, "Alice\r\nBcc: eve@example.net")
    assert named.display_name == "Alice Bcc: eve@example.net" and named.addr_spec == ALICE


@pytest.mark.parametrize(
    "value", ["", "alice", "alice@", "@example.org", "a@b@c", "a b@c.d", "ä@example.org", "a@b.c,d@e.f", "a@b.c\nx"]
)
def test_anything_but_one_address_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        parse_address(value)
    assert str(caught.value) == "not one email address"


def test_default_templates_per_kind() -> None:
    templates = Templates(reconnect_url="https://app.example.com/connect/{platform}")
    reauth = templates.render("needs_reauth", "spotify", occurred_at=MOMENT, user_name="Alice", reason="invalid_grant")
    assert reauth.subject == "Reconnect your Spotify account"
    assert "Hi Alice," in reauth.text and "2026-11-30 at 21:05 UTC" in reauth.text
    assert "revoked or has expired" in reauth.text
    assert "https://app.example.com/connect/spotify" in reauth.text
    assert 'href="https://app.example.com/connect/spotify"' in reauth.html
    recovered = templates.render("recovered", "google_calendar", occurred_at=MOMENT)
    assert recovered.subject == "Your Google Calendar account is connected again"
    assert recovered.text.startswith("Hello,") and "Google Calendar" in recovered.html


def test_without_a_reconnect_url_the_user_is_sent_to_their_settings() -> None:
    rendered = Templates().render("needs_reauth", "spotify", occurred_at=MOMENT)
    assert "from your account settings" in rendered.text and "href" not in rendered.html


def test_html_is_escaped_and_text_is_not() -> None:
    rendered = Templates().render("needs_reauth", "spotify", occurred_at=MOMENT, user_name="<script>x</script> & co")
    assert "<script>" not in rendered.html and "&lt;script&gt;x&lt;/script&gt; &amp; co" in rendered.html
    assert "Hi <script>x</script> & co," in rendered.text


def test_an_override_folder_replaces_files_by_name(tmp_path: Path) -> None:
    (tmp_path / "spotify.needs_reauth.subject.txt").write_text("{{ display_name }}: please sign in again\n")
    (tmp_path / "default.recovered.txt").write_text("All good with {{ platform }} since {{ occurred_at.date() }}.\n")
    (tmp_path / "layout.html").write_text("<main>{% block content %}{% endblock %}</main>")
    templates = Templates(tmp_path)
    spotify = templates.render("needs_reauth", "spotify", occurred_at=MOMENT)
    assert spotify.subject == "Spotify: please sign in again"
    assert spotify.html.startswith("<main>")  # the overridden layout under the default body
    assert "stopped working" in spotify.text  # the packaged default where nothing overrides it
    discord = templates.render("needs_reauth", "discord", occurred_at=MOMENT)
    assert discord.subject == "Reconnect your Discord account"  # other platforms keep the default
    assert (
        templates.render("recovered", "twitch", occurred_at=MOMENT).text == "All good with twitch since 2026-11-30.\n"
    )
    templates.check()


def test_a_platform_that_is_no_file_name_uses_the_default(tmp_path: Path) -> None:
    (tmp_path / "default.needs_reauth.subject.txt").write_text("Default subject")
    rendered = Templates(tmp_path).render("needs_reauth", "../default", occurred_at=MOMENT)
    assert rendered.subject == "Default subject"


def test_the_subject_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "default.needs_reauth.subject.txt").write_text("Reconnect\r\n  {{ display_name }}\n\n")
    assert Templates(tmp_path).render("needs_reauth", "x", occurred_at=MOMENT).subject == "Reconnect X"


def _message(notice_id: uuid.UUID, *, now: datetime = MOMENT) -> EmailMessage:
    rendered = Templates().render("needs_reauth", "spotify", occurred_at=MOMENT, user_name="Alice")
    return build_message(
        rendered,
        notice_id=notice_id,
        sender=parse_address("Token Service <noreply@tokens.example.com>"),
        recipient=parse_address(ALICE, "Alice"),
        reply_to=parse_address("help@example.com"),
        now=now,
    )


def test_the_message_headers_and_parts() -> None:
    notice_id = uuid.uuid4()
    parsed = message_from_bytes(_message(notice_id).as_bytes(), policy=policy.default)
    assert parsed["From"] == "Token Service <noreply@tokens.example.com>"
    assert parsed["To"] == f"Alice <{ALICE}>"
    assert parsed["Reply-To"] == "help@example.com"
    assert parsed["Subject"] == "Reconnect your Spotify account"
    assert parsed["Date"] == "Mon, 30 Nov 2026 21:05:00 +0000"
    assert parsed["Message-ID"] == f"<{notice_id}.notify@tokens.example.com>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_a_resent_notice_keeps_its_message_id() -> None:
    notice_id = uuid.uuid4()
    first, again = _message(notice_id), _message(notice_id, now=datetime.now(UTC))
    assert first["Message-ID"] == again["Message-ID"] != _message(uuid.uuid4())["Message-ID"]


SERVER = "smtp.example.com:587"
NO_SUCH_USER = aiosmtplib.SMTPRecipientRefused(550, f"5.1.1 <{ALICE}>: no such user", ALICE)


@pytest.mark.parametrize(
    ("error", "permanent", "says"),
    [
        (aiosmtplib.SMTPRecipientsRefused([NO_SUCH_USER]), True, "refused the recipient a***@example.org (550 5.1.1)"),
        (aiosmtplib.SMTPRecipientRefused(452, f"4.2.2 {ALICE} mailbox full", ALICE), False, "(452 4.2.2)"),
        (aiosmtplib.SMTPDataError(451, "4.3.0 try again later"), False, "refused the message (451 4.3.0)"),
        (aiosmtplib.SMTPDataError(554, f"5.7.1 message from {ALICE} looks like spam"), True, "(554 5.7.1)"),
        (aiosmtplib.SMTPResponseException(421, "4.7.0 too busy"), False, "(421 4.7.0)"),
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials for mailer"), False, "failed (535 5.7.8)"),
        (aiosmtplib.SMTPSenderRefused(553, "5.7.1 sender not owned", "noreply@x.y"), False, "refused the sender"),
        (aiosmtplib.SMTPConnectResponseError(554, "no service"), False, "refused the session (554)"),
        (aiosmtplib.SMTPNotSupported("SMTP STARTTLS extension not supported by server."), False, "STARTTLS"),
        (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), False, "timed out"),
        (aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"), False, "timed out"),
        (aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"), False, "closed the connection"),
        (ConnectionRefusedError(111, "Connection refused"), False, "cannot reach the SMTP server smtp.example.com:587"),
    ],
)  # fmt: skip
def test_smtp_failures_are_classified(error: Exception, permanent: bool, says: str) -> None:
    failed = smtp_failure(error, ALICE, SERVER)
    assert failed.permanent is permanent
    assert says in failed.reason
    assert ALICE not in failed.reason and "bad credentials" not in failed.reason and "spam" not in failed.reason


def test_a_refused_connection_names_its_cause() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise aiosmtplib.SMTPConnectError("Error connecting to smtp.example.com on port 587") from exc
    except aiosmtplib.SMTPConnectError as wrapped:
        failed = smtp_failure(wrapped, ALICE, SERVER)
    assert not failed.permanent and failed.reason.endswith("(ConnectionRefusedError)")


def test_an_untrusted_certificate_points_at_the_ca_setting() -> None:
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate"
    try:
        try:
            raise untrusted
        except OSError as exc:
            raise aiosmtplib.SMTPConnectError("Error connecting") from exc
    except aiosmtplib.SMTPConnectError as wrapped:
        failed = smtp_failure(wrapped, ALICE, SERVER)
    assert not failed.permanent
    assert "certificate is not trusted (self-signed certificate)" in failed.reason
    assert "NOTIFY_EMAIL_SMTP_CA_FILE" in failed.reason
