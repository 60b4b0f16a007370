"""Machine-readable descriptions of the topics and payloads, for producers and consumers in
any language: one JSON Schema per event and an AsyncAPI 3.0 document.

    python -m schemas.export docs/   # rewrites docs/asyncapi.json and docs/schemas/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.events import EVENT_TYPES, DeadLetter, ProviderCircuitChanged

# Every event the service writes or reads, by its topic's default name: the connections' events
# (EVENT_TYPES) and the workers' circuit changes, which are not a connection's (no user_id).
PUBLISHED_EVENTS: dict[str, type[BaseModel]] = {
    **EVENT_TYPES,
    ProviderCircuitChanged.default_topic: ProviderCircuitChanged,
}

# Who writes and who reads each topic (contract §1), from the service's point of view.
_SERVICE_RECEIVES = ("connection.created", "token.expiring", "connection.disconnected")
_DESCRIPTIONS = {
    "connection.created": "A user connected a platform; tokens arrive encrypted (iv:authTag:ciphertext).",
    "token.expiring": "A request to refresh one connection (scheduled, on demand, manual or bulk).",
    "token.refreshed": "A connection's token was refreshed and stored.",
    "token.needs_reauth": "A connection can no longer be refreshed; the user must reconnect.",
    "token.refresh_failed": "A refresh failed (status error, or retries exhausted).",
    "connection.disconnected": "A user (or an operator) disconnected a platform: the connection is never refreshed"
    " again and its tokens are revoked where the provider allows, then wiped.",
    "token.revoked": "A connection was disconnected; what its tokens' revocation at the provider came to.",
    "provider.circuit_changed": "A worker's circuit breaker for a platform opened (the provider failed most calls;"
    " that worker stops calling it for cool_down_seconds) or closed again (open_seconds after it first opened)."
    " One open per outage and worker: a failed trial call re-opens it without a new event.",
}
_CONNECTION_KEY = "'<user_id>:<platform>'"
_KEYS = {"provider.circuit_changed": "'<platform>'"}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Event type (topic's default name, or ``dead_letter``) -> JSON Schema."""
    models: dict[str, type[BaseModel]] = {**PUBLISHED_EVENTS, "dead_letter": DeadLetter}
    return {name: model.model_json_schema(mode="validation") for name, model in models.items()}


def asyncapi_document() -> dict[str, Any]:
    schemas = json_schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in PUBLISHED_EVENTS:
        name = _identifier(topic)
        messages[name] = {
            "name": topic,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        channels[name] = {
            "address": topic,
            "description": f"{_DESCRIPTIONS[topic]} Key: {_KEYS.get(topic, _CONNECTION_KEY)} (UTF-8).",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        action = "receive" if topic in _SERVICE_RECEIVES else "send"
        operations[f"{action}_{name}"] = {"action": action, "channel": {"$ref": f"#/channels/{name}"}}
    for topic in _SERVICE_RECEIVES:
        name = _identifier(f"{topic}.dlq")
        messages[name] = {
            "name": f"{topic}.dlq",
            "contentType": "application/json",
            "payload": {"$ref": "#/components/schemas/dead_letter"},
        }
        channels[name] = {
            "address": f"{topic}.dlq",
            "description": f"Records of {topic} the service could not process, with the reason.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"send_{name}"] = {"action": "send", "channel": {"$ref": f"#/channels/{name}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Token refresh service",
            "version": "1.0.0",
            "description": "Topics and events of the OAuth token refresh service. Topic names are configurable;"
            " these are the defaults. Every event carries event_id (consumers dedupe on it), event_type,"
            " schema_version, occurred_at and platform; a connection's events also user_id (provider.circuit_changed"
            " names the worker instead). No event carries a plain-text token.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {_identifier(name): schema for name, schema in schemas.items()},
        },
    }


def _identifier(topic: str) -> str:
    return topic.replace(".", "_")


def render(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def write(directory: Path) -> list[Path]:
    """Write the AsyncAPI document and one schema file per event; returns the paths."""
    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    written = [directory / "asyncapi.json"]
    written[0].write_text(render(asyncapi_document()))
    for name, schema in json_schemas().items():
        path = directory / "schemas" / f"{name}.json"
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        sys.stdout.write(f"{path}\n")
