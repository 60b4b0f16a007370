"""OAuth token refresh service: keeps every (user, platform) connection's token valid.

The seed's API (contract §7) is importable from here.
"""

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
