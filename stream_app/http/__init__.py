"""The HTTP API: health, readiness, metrics, admin endpoints (docs/api.md)."""

from stream_app.http.app import create_app
from stream_app.http.server import HttpServer

__all__ = ["HttpServer", "create_app"]
