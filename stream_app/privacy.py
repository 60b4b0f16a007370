"""Privacy helpers for logs: keyed user-id hashes and scrubbing of provider text."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

_MAX_PROVIDER_TEXT = 200


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


def sanitize_provider_text(text: str, secrets: Iterable[str]) -> str:
    """Provider error text made safe to store and publish: secrets removed, one short line."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > _MAX_PROVIDER_TEXT:
        text = text[:_MAX_PROVIDER_TEXT] + "..."
    return text
