"""OAuth token refresh service: keeps every (user, platform) connection's token valid.

The seed's API (contract §7) is importable from here. It is loaded on first use, so that the
command line (`token-refresh --help`, `keygen`, ...) does not import the engine to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream_app.api import (
        configure,
        decrypt_token,
        encrypt_token,
        get_valid_access_token,
        hash_user_id,
        open_service,
        refresh_expiring_tokens,
        refresh_platform_token,
    )
    from stream_app.service import RefreshedAccessToken, TokenService

_HOMES = {
    "RefreshedAccessToken": "stream_app.service",
    "TokenService": "stream_app.service",
    "configure": "stream_app.api",
    "decrypt_token": "stream_app.api",
    "encrypt_token": "stream_app.api",
    "get_valid_access_token": "stream_app.api",
    "hash_user_id": "stream_app.api",
    "open_service": "stream_app.api",
    "refresh_expiring_tokens": "stream_app.api",
    "refresh_platform_token": "stream_app.api",
}
__all__ = [
    "RefreshedAccessToken",
    "TokenService",
    "configure",
    "decrypt_token",
    "encrypt_token",
    "get_valid_access_token",
    "hash_user_id",
    "open_service",
    "refresh_expiring_tokens",
    "refresh_platform_token",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'stream_app' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
