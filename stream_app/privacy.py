"""Privacy helpers for logs: keyed user-id hashes and scrubbing of provider text."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

_MAX_PROVIDER_TEXT = 200
# Only this much of a provider's text is looked at (and it is cut to _MAX_PROVIDER_TEXT after).
_MAX_SCANNED_TEXT = 4096
# Any run of this many characters shared with an encoded form of a secret is redacted.
_WINDOW = 8
_REDACTED = "[redacted]"
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]")


class UserIdHasher:
    """HMAC-SHA256 of the user id under a key derived from a secret (LOG_HASH_KEY, else
    ENCRYPTION_KEY), 8 hex shown.

    A plain SHA of a UUID can be reversed by anyone holding the user table; a keyed hash
    cannot, yet stays stable across restarts so one user's log lines can be followed.
    """

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"token-refresh/user-id-log-hash", hashlib.sha256).digest()

    def __call__(self, user_id: object) -> str:
        return hmac.new(self._key, str(user_id).encode(), hashlib.sha256).hexdigest()[:8]


def secret_forms(secret: str) -> set[str]:
    """The ways a provider may write ``secret`` back: as is, URL-encoded (``quote`` and
    ``quote_plus``), base64 and base64url (at each of the three byte alignments it can take
    inside a longer encoded text), JSON-escaped (``\\u`` escapes and ``\\/`` included) and
    HTML-escaped."""
    raw = secret.encode()
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        html.escape(secret),
    }
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        # The first group holds the padding bytes, the last one depends on what follows.
        middle = encoded[4:-4] if shift else encoded
        forms |= {middle, middle.rstrip("="), middle.replace("+", "-").replace("/", "_").rstrip("=")}
    return {form for form in forms if form}


class Scrubber:
    """Redacts from a text every run of ``_WINDOW`` or more characters that also appears in an
    encoded form of one of the secrets (case-insensitively: percent-encoding's hex may come back
    in either case), so prefixes, suffixes and substrings of a secret go too. A secret shorter
    than the window is redacted where it appears whole."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._windows: set[str] = set()
        self._short: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            for form in secret_forms(secret):
                lowered = form.lower()
                if len(lowered) < _WINDOW:
                    self._short.add(lowered)
                else:
                    self._windows.update(lowered[i : i + _WINDOW] for i in range(len(lowered) - _WINDOW + 1))

    def __call__(self, text: str) -> str:
        lowered = text.lower()
        hidden = bytearray(len(text))
        for start, end in self._matches(lowered):
            hidden[start:end] = b"\1" * (end - start)
        return "".join(_joined(text, hidden))

    def touches(self, text: str) -> bool:
        """Whether ``text`` shares a run with a secret (then it is not to be shown at all)."""
        return any(True for _ in self._matches(text.lower()))

    def _matches(self, lowered: str) -> Iterator[tuple[int, int]]:
        for i in range(len(lowered) - _WINDOW + 1):
            if lowered[i : i + _WINDOW] in self._windows:
                yield i, i + _WINDOW
        for short in self._short:
            start = lowered.find(short)
            while start >= 0:
                yield start, start + len(short)
                start = lowered.find(short, start + 1)


def _joined(text: str, hidden: bytearray) -> Iterator[str]:
    shown_from = 0
    i = 0
    while i < len(text):
        if hidden[i]:
            yield text[shown_from:i]
            while i < len(text) and hidden[i]:
                i += 1
            yield _REDACTED
            shown_from = i
        else:
            i += 1
    yield text[shown_from:]


def sanitize_provider_text(text: str, secrets: Iterable[str]) -> str:
    """Provider text made safe for a DEBUG line: every encoded form of each secret (and any
    run of 8+ characters of one) removed, control characters replaced, one short line."""
    text = Scrubber(secrets)(text[:_MAX_SCANNED_TEXT])
    text = _UNPRINTABLE.sub("?", re.sub(r"\s+", " ", text)).strip()
    if len(text) > _MAX_PROVIDER_TEXT:
        text = text[:_MAX_PROVIDER_TEXT] + "..."
    return text
