"""Durable state: the `platform_connections` table and the transactional outbox."""

from stream_app.db.engine import Database
from stream_app.db.models import ConnectionRow, ConnectionStatus, OutboxRow

__all__ = ["ConnectionRow", "ConnectionStatus", "Database", "OutboxRow"]
