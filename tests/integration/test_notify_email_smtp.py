"""The email channel against a real SMTP server in the test process (aiosmtpd): the message
arrives once with its headers and parts; STARTTLS with a certificate made here and AUTH LOGIN /
PLAIN; implicit TLS; 4xx retried, 5xx given up, a server that is down retried; an override
folder's template used. Nothing token-shaped from the events, nor a credential, reaches the server."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stream_app.notify.channel import DeliveryFailed
from stream_app.notify.email import EmailChannel, EmailSettings
from stream_app.notify.email.lookup import Recipient
from stream_app.notify.email.templates import Templates
from stream_app.notify.notice import Notice
from tests.support.infra import free_port

ALICE = "alice.liddell@example.org"
SENDER = "noreply@tokens.example.com"
USERNAME, PASSWORD = "mailer", "smtp-pw-Qx7Lk2Vb9Rt4"
# Token-shaped strings planted in the events (which never carry them for real): none may reach
# the SMTP server, nor may the SMTP password in the message.
PLANTED = (
    "ya29.a0AfB_planted_access_token_1f2e3d",
    "AQD_planted_refresh_token_9c8b7a6f",
    "0123456789abcdef01234567:00112233445566778899aabbccddeeff:deadbeefcafe",
)
FORBIDDEN = (*PLANTED, PASSWORD)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    authenticated: bool | None

    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """aiosmtpd's handler: records each accepted message, or answers RCPT / DATA with a reply."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or envelope.content
        tls = server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit TLS
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), content, tls, session.authenticated))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((mechanism, data.login, data.password))
        valid = data.login == USERNAME.encode() and data.password == PASSWORD.encode()
        return AuthResult(success=valid, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def everything(self) -> bytes:
        return b"\n".join(
            r.mail_from.encode() + b" ".join(t.encode() for t in r.rcpt_tos) + r.content for r in self.received
        )


@dataclass
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, made for this module."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test SMTP server")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(cert_file, key_file)


@contextlib.contextmanager
def smtp_server(recorder: Recorder, **options: Any) -> Iterator[int]:
    """A real SMTP server on a free port of 127.0.0.1 for the block; yields its port. After the
    block, nothing forbidden may be in anything it received."""
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
    everything = recorder.everything()
    for secret in FORBIDDEN:
        assert secret.encode() not in everything, "a token-shaped string or credential reached the SMTP server"


class StaticLookup:
    def __init__(self, recipient: Recipient | None) -> None:
        self.recipient = recipient

    async def find(self, user_id: uuid.UUID) -> Recipient | None:
        return self.recipient

    async def aclose(self) -> None:
        return None


ALICE_RECIPIENT = Recipient(ALICE, "Alice")


def channel(port: int, *, recipient: Recipient | None = ALICE_RECIPIENT, **options: Any) -> EmailChannel:
    settings = EmailSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_timeout_seconds=5,
        lookup_sql="SELECT email FROM users WHERE id = :user_id",
        **{"NOTIFY_EMAIL_FROM": f"Token Service <{SENDER}>", "smtp_security": "none", **options},
    )
    templates = Templates(settings.templates_dir, reconnect_url=settings.reconnect_url)
    return EmailChannel(settings, StaticLookup(recipient), templates)


def needs_reauth(platform: str = "spotify") -> Notice:
    """A needs_reauth notice whose event carries token-shaped strings where no event would."""
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "token.needs_reauth",
        "reason": "invalid_grant",
        "error": f"invalid_grant: refresh token {PLANTED[1]} revoked",
        "access_token": PLANTED[0],
        "refresh_token": PLANTED[2],
    }
    return Notice(uuid.uuid4(), "needs_reauth", platform, uuid.uuid4(), datetime.now(UTC), event)


async def test_the_message_arrives_once_with_its_headers_and_parts() -> None:
    recorder = Recorder()
    with smtp_server(recorder) as port:
        email = channel(port, reply_to="help@example.com", reconnect_url="https://app.example.com/connect/{platform}")
        notice = needs_reauth()
        await email.send(notice)
        await email.aclose()
    [received] = recorder.received
    assert (received.mail_from, received.rcpt_tos) == (SENDER, [ALICE])
    message = received.message()
    assert message["From"] == f"Token Service <{SENDER}>"
    assert message["To"] == f"Alice <{ALICE}>"
    assert message["Reply-To"] == "help@example.com"
    assert message["Subject"] == "Reconnect your Spotify account"
    assert message["Message-ID"] == f"<{notice.notice_id}.notify@tokens.example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain" and "Hi Alice," in text.get_content()
    assert "https://app.example.com/connect/spotify" in text.get_content()
    assert (
        html.get_content_type() == "text/html"
        and 'href="https://app.example.com/connect/spotify"' in html.get_content()
    )


async def test_a_recovered_notice() -> None:
    recorder = Recorder()
    with smtp_server(recorder) as port:
        notice = Notice(uuid.uuid4(), "recovered", "discord", uuid.uuid4(), datetime.now(UTC), {"reason": "scheduled"})
        await channel(port).send(notice)
    [received] = recorder.received
    assert received.message()["Subject"] == "Your Discord account is connected again"


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_starttls_and_auth(certificate: Certificate, mechanism: str) -> None:
    recorder = Recorder()
    other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[mechanism]
    options = {
        "tls_context": certificate.server_context(),
        "require_starttls": True,
        "authenticator": recorder.authenticate,
        "auth_required": True,
        "auth_exclude_mechanism": [other],
    }
    with smtp_server(recorder, **options) as port:
        email = channel(
            port,
            smtp_security="starttls",
            smtp_ca_file=certificate.cert_file,
            smtp_username=USERNAME,
            smtp_password=PASSWORD,
        )
        await email.send(needs_reauth())
    assert recorder.logins == [(mechanism, USERNAME.encode(), PASSWORD.encode())]
    [received] = recorder.received
    assert received.tls and received.authenticated


async def test_a_wrong_password_is_retried_and_not_shown(certificate: Certificate) -> None:
    recorder = Recorder()
    options = {"tls_context": certificate.server_context(), "authenticator": recorder.authenticate}
    with smtp_server(recorder, **options) as port:
        email = channel(
            port,
            smtp_security="starttls",
            smtp_ca_file=certificate.cert_file,
            smtp_username=USERNAME,
            smtp_password="not-the-password",
        )
        with pytest.raises(DeliveryFailed) as caught:
            await email.send(needs_reauth())
    assert not caught.value.permanent
    assert "SMTP authentication failed (535" in caught.value.reason
    assert "not-the-password" not in caught.value.reason and not recorder.received


async def test_an_untrusted_certificate_is_refused_unless_verification_is_turned_off(
    certificate: Certificate,
) -> None:
    recorder = Recorder()
    with smtp_server(recorder, tls_context=certificate.server_context(), require_starttls=True) as port:
        with pytest.raises(DeliveryFailed) as caught:
            await channel(port, smtp_security="starttls").send(needs_reauth())
        assert not caught.value.permanent
        assert "certificate is not trusted" in caught.value.reason
        assert not recorder.received
        await channel(port, smtp_security="starttls", smtp_tls_verify=False).send(needs_reauth())
    [received] = recorder.received
    assert received.tls


async def test_starttls_is_required_not_opportunistic() -> None:
    recorder = Recorder()
    with smtp_server(recorder) as port:  # a server that does not offer STARTTLS
        with pytest.raises(DeliveryFailed) as caught:
            await channel(port, smtp_security="starttls").send(needs_reauth())
    assert not caught.value.permanent and "STARTTLS" in caught.value.reason
    assert not recorder.received


async def test_implicit_tls(certificate: Certificate) -> None:
    recorder = Recorder()
    with smtp_server(recorder, ssl_context=certificate.server_context()) as port:
        await channel(port, smtp_security="tls", smtp_ca_file=certificate.cert_file).send(needs_reauth())
    [received] = recorder.received
    assert received.tls


async def test_a_4xx_reply_is_retried() -> None:
    with smtp_server(Recorder(data_reply="451 4.3.0 Temporary failure, try again later")) as port:
        with pytest.raises(DeliveryFailed) as caught:
            await channel(port).send(needs_reauth())
    assert not caught.value.permanent
    assert caught.value.reason == "the SMTP server refused the message (451 4.3.0)"


async def test_a_5xx_reply_is_given_up_and_the_address_is_masked() -> None:
    recorder = Recorder(rcpt_reply=f"550 5.1.1 <{ALICE}>: Recipient address rejected: no such user")
    with smtp_server(recorder) as port:
        with pytest.raises(DeliveryFailed) as caught:
            await channel(port).send(needs_reauth())
    assert caught.value.permanent
    assert caught.value.reason == "the SMTP server refused the recipient a***@example.org (550 5.1.1)"


async def test_a_server_that_is_down_is_retried() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(DeliveryFailed) as caught:
        await channel(port).send(needs_reauth())
    assert not caught.value.permanent
    assert caught.value.reason == f"cannot reach the SMTP server 127.0.0.1:{port} (ConnectionRefusedError)"


async def test_no_address_is_given_up_with_a_clear_reason() -> None:
    recorder = Recorder()
    with smtp_server(recorder) as port:
        with pytest.raises(DeliveryFailed) as caught:
            await channel(port, recipient=None).send(needs_reauth())
        assert caught.value.permanent and "no email address for the user" in caught.value.reason
        with pytest.raises(DeliveryFailed) as invalid:
            await channel(port, recipient=Recipient("alice@exa mple.org")).send(needs_reauth())
        assert invalid.value.permanent
        assert invalid.value.reason == "the user's address a***@exa mple.org is not a valid email address"
    assert not recorder.received


async def test_an_override_folder_template_is_sent(tmp_path: Path) -> None:
    (tmp_path / "spotify.needs_reauth.subject.txt").write_text("{{ display_name }} needs you back, {{ user_name }}")
    (tmp_path / "spotify.needs_reauth.html").write_text("<p>Come back to {{ display_name }}</p>")
    recorder = Recorder()
    with smtp_server(recorder) as port:
        email = channel(port, templates_dir=tmp_path)
        await email.send(needs_reauth("spotify"))
        await email.send(needs_reauth("discord"))
    spotify, discord = (r.message() for r in recorder.received)
    assert spotify["Subject"] == "Spotify needs you back, Alice"
    assert spotify.get_body(("html",)).get_content().strip() == "<p>Come back to Spotify</p>"  # type: ignore[union-attr]
    assert "stopped working" in spotify.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert discord["Subject"] == "Reconnect your Discord account"
