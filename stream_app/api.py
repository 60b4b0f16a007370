"""The seed's Python API (contract §7) on a default ``TokenService`` per event loop.

The default service is built from the environment on first use in each event loop (its HTTP
and database pools belong to that loop), so scripts may call these functions from several
``asyncio.run`` calls. To close the pools when done, use the explicit form::

    async with stream_app.open_service() as tokens:
        token = await tokens.get_valid_access_token(user_id, "spotify")

Applications that manage their own lifecycle can also install a service with ``configure``.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from functools import cache

from stream_app.crypto import TokenBinding, TokenCipher, TokenField
from stream_app.privacy import UserIdHasher
from stream_app.service import RefreshedAccessToken, TokenService
from stream_app.settings import Settings, load_settings

_installed: TokenService | None = None
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TokenService] = weakref.WeakKeyDictionary()


@cache
def _settings() -> Settings:
    return load_settings()


def configure(service: TokenService | None) -> None:
    """Install the service the module-level functions use (None: build from the environment)."""
    global _installed
    _installed = service


def open_service() -> TokenService:
    """A service from the environment, to use as ``async with open_service() as tokens:``; it
    stores tokens a stopped process left behind on entry and closes its pools on exit."""
    return TokenService(_settings())


def _crypto() -> tuple[TokenCipher, UserIdHasher]:
    """The installed service's cipher and hasher, else the environment's: no event loop needed."""
    if _installed is not None:
        return _installed.cipher, _installed.hash_user_id
    return _environment_crypto()


@cache
def _environment_crypto() -> tuple[TokenCipher, UserIdHasher]:
    settings = _settings()
    cipher = TokenCipher.from_settings(settings)
    return cipher, UserIdHasher(settings.log_hash_secret())


def _default_service() -> TokenService:
    if _installed is not None:
        return _installed
    loop = asyncio.get_running_loop()
    service = _per_loop.get(loop)
    if service is None:
        service = _per_loop[loop] = TokenService(_settings())
    return service


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
    return _crypto()[0].encrypt(plaintext, _binding(user_id, platform, field))


def decrypt_token(
    ciphertext: str,
    *,
    user_id: uuid.UUID | str | None = None,
    platform: str | None = None,
    field: TokenField | None = None,
) -> str:
    """Decrypt a seed-format ciphertext, or a bound one given the connection and field."""
    return _crypto()[0].decrypt(ciphertext, _binding(user_id, platform, field))


def _binding(user_id: uuid.UUID | str | None, platform: str | None, field: TokenField | None) -> TokenBinding | None:
    given = (user_id, platform, field)
    if all(part is None for part in given):
        return None
    if user_id is None or platform is None or field is None:
        raise TypeError("a binding needs user_id, platform and field together")
    # The canonical form, as the service binds it (an upper-case or unhyphenated spelling would
    # make a ciphertext the service refuses as failing authentication).
    return TokenBinding(uuid.UUID(str(user_id)), platform, field)


def hash_user_id(user_id: uuid.UUID | str) -> str:
    """The 8-hex keyed hash that stands for a user in logs."""
    return _crypto()[1](user_id)
