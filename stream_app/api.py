"""The seed's Python API (contract §7) on a process-wide default ``TokenService``.

The default service is built from the environment on first use and bound to the event
loop that first uses it. Applications that manage their own lifecycle can build a
``TokenService`` and call its methods instead, or install it with ``configure``.
"""

from __future__ import annotations

import uuid
from functools import cache

from stream_app.crypto import TokenBinding, TokenField
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


async def get_valid_access_token(user_id: uuid.UUID | str, platform: str) -> str | None:
    return await _default_service().get_valid_access_token(user_id, platform)


async def refresh_platform_token(user_id: uuid.UUID | str, platform: str) -> RefreshedAccessToken | None:
    return await _default_service().refresh_platform_token(user_id, platform)


async def refresh_expiring_tokens() -> dict[str, int]:
    return await _default_service().refresh_expiring_tokens()


def encrypt_token(
    plaintext: str,
    *,
    user_id: uuid.UUID | str | None = None,
    platform: str | None = None,
    field: TokenField | None = None,
) -> str:
    """Encrypt with the configured ENCRYPTION_KEY, like the seed's ``encryptToken``. Given the
    connection (``user_id``, ``platform``) and ``field``, the ciphertext is bound to them."""
    return _default_service().cipher.encrypt(plaintext, _binding(user_id, platform, field))


def decrypt_token(
    ciphertext: str,
    *,
    user_id: uuid.UUID | str | None = None,
    platform: str | None = None,
    field: TokenField | None = None,
) -> str:
    """Decrypt a seed-format ciphertext, or a bound one given the connection and field."""
    return _default_service().cipher.decrypt(ciphertext, _binding(user_id, platform, field))


def _binding(user_id: uuid.UUID | str | None, platform: str | None, field: TokenField | None) -> TokenBinding | None:
    given = (user_id, platform, field)
    if all(part is None for part in given):
        return None
    if user_id is None or platform is None or field is None:
        raise TypeError("a binding needs user_id, platform and field together")
    return TokenBinding(user_id, platform, field)


def hash_user_id(user_id: uuid.UUID | str) -> str:
    """The 8-hex keyed hash that stands for a user in logs."""
    return _default_service().hash_user_id(user_id)
