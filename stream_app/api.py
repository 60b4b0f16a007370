"""The seed's Python API (contract §7) on a process-wide default ``TokenService``.

The default service is built from the environment on first use and bound to the event
loop that first uses it. Applications that manage their own lifecycle can build a
``TokenService`` and call its methods instead, or install it with ``configure``.
"""

from __future__ import annotations

import uuid
from functools import cache

from stream_app.crypto import TokenCipher
from stream_app.privacy import UserIdHasher
from stream_app.service import RefreshedAccessToken, TokenService
from stream_app.settings import Settings, load_settings

_service: TokenService | None = None


@cache
def _settings() -> Settings:
    return load_settings()


def configure(service: TokenService | None) -> None:
    """Install the service the module-level functions use (None: build from the environment)."""
    global _service
    _service = service


def _default_service() -> TokenService:
    global _service
    if _service is None:
        _service = TokenService(_settings())
    return _service


def _active_settings() -> Settings:
    return _service.settings if _service is not None else _settings()


async def get_valid_access_token(user_id: uuid.UUID | str, platform: str) -> str | None:
    return await _default_service().get_valid_access_token(user_id, platform)


async def refresh_platform_token(user_id: uuid.UUID | str, platform: str) -> RefreshedAccessToken | None:
    return await _default_service().refresh_platform_token(user_id, platform)


async def refresh_expiring_tokens() -> dict[str, int]:
    return await _default_service().refresh_expiring_tokens()


def encrypt_token(plaintext: str) -> str:
    """Encrypt with the configured ENCRYPTION_KEY, like the seed's ``encryptToken``."""
    return TokenCipher(_active_settings().encryption_key.get_secret_value()).encrypt(plaintext)


def decrypt_token(ciphertext: str) -> str:
    return TokenCipher(_active_settings().encryption_key.get_secret_value()).decrypt(ciphertext)


def hash_user_id(user_id: uuid.UUID | str) -> str:
    """The 8-hex keyed hash that stands for a user in logs."""
    return UserIdHasher(_active_settings().encryption_key.get_secret_value())(user_id)
