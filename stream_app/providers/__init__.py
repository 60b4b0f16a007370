"""Clients of the providers' token endpoints: one request shape, per-platform dialects."""

from stream_app.providers.client import ProviderClient, RefreshedTokens
from stream_app.providers.transport import build_http_transport

__all__ = ["ProviderClient", "RefreshedTokens", "build_http_transport"]
