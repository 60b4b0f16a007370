"""Rules the settings apply to secrets and endpoints: each returns why a value is refused, or None.

Kept apart from ``settings`` so that the rules (and their thresholds) read in one place.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from urllib.parse import urlsplit

KEYGEN_HINT = 'generate one with `token-refresh keygen` (or python -c "import secrets; print(secrets.token_hex(32))")'
# A key of 32 random bytes has on average 30 distinct byte values and 30 distinct differences
# between neighbouring bytes; fewer than 16 of either happens to a random key with a
# probability under 3e-14, and to every key typed by hand ("ab" * 32, "0123456789abcdef" * 4,
# 000102...1f, a repeated word).
MIN_DISTINCT_BYTES = 16
MIN_DISTINCT_STEPS = 16
# Text given in hex (`echo -n "<passphrase>" | xxd -p`, a hex string hex-encoded again): every
# byte printable ASCII or a tab / line break, which 32 random bytes are with a chance under 5e-14.
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
LOOPBACK_NAMES = frozenset({"localhost"})


def key_weakness(key: str) -> str | None:
    """Why ``key`` is not a usable 32-byte key given as 64 hex characters, or None."""
    if not _HEX_KEY.fullmatch(key):
        return f"must be 64 hex characters (32 bytes); {KEYGEN_HINT}"
    raw = bytes.fromhex(key)
    steps = {(later - earlier) % 256 for earlier, later in itertools.pairwise(raw)}
    if len(set(raw)) < MIN_DISTINCT_BYTES or len(steps) < MIN_DISTINCT_STEPS:
        return (
            f"is not random enough (a repeated pattern or a sequence: fewer than {MIN_DISTINCT_BYTES} distinct bytes "
            f"or steps between bytes); {KEYGEN_HINT}"
        )
    if set(raw) <= _TEXT_BYTES:
        return f"is text in hex (every byte printable ASCII: a passphrase, not 32 random bytes); {KEYGEN_HINT}"
    return None


# A producer signing secret (hex, base64 or base64url of at least 24 random bytes): 32 random hex
# characters have at least 12 distinct steps between neighbouring characters in 200,000 draws;
# a pattern repeated ("0123456789abcdef" * 2, "abcdefghij" * 4) has 2 or 3.
_SIGNING_SECRET = re.compile(r"[A-Za-z0-9+/=_.~-]{32,}")
MIN_SIGNING_SECRET_CHARACTERS = 10
MIN_SIGNING_SECRET_STEPS = 8


def signing_secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is not a usable producer signing secret, or None."""
    steps = {ord(later) - ord(earlier) for earlier, later in itertools.pairwise(secret)}
    if (
        not _SIGNING_SECRET.fullmatch(secret)
        or len(set(secret)) < MIN_SIGNING_SECRET_CHARACTERS
        or len(steps) < MIN_SIGNING_SECRET_STEPS
    ):
        return "the secret must be at least 32 random characters (openssl rand -hex 32)"
    return None


def is_loopback(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1: traffic that never leaves the machine."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_url_problem(url: str, *, allow_insecure: bool) -> str | None:
    """Why a token endpoint must not be used: a refresh sends the refresh token and the client
    secret to it, so it must be HTTPS unless it is on this machine or the deployment said so."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials in the URL (use the *_CLIENT_ID / *_CLIENT_SECRET settings)"
    if parts.scheme == "http" and not allow_insecure and not is_loopback(host):
        return (
            "http:// would send refresh tokens and the client secret in clear; use https:// "
            "(plain http is accepted only for localhost, 127.0.0.0/8 and ::1, or with ALLOW_INSECURE_TOKEN_URLS=true "
            "in a test deployment)"
        )
    return None
