"""The published JSON Schemas and AsyncAPI document match the models, and validate real events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from schemas import (
    ConnectionCreated,
    ProviderCircuitChanged,
    TokenExpiring,
    TokenNeedsReauth,
    TokenRefreshed,
    TokenRefreshFailed,
)
from schemas.events import EVENT_TYPES
from schemas.export import asyncapi_document, json_schemas, render


def validate(payload: object, schema: dict[str, object]) -> None:
    """What a producer in another language would do with the published schema (formats checked)."""
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(
        payload
    )


DOCS = Path(__file__).resolve().parents[2] / "docs"
CIPHERTEXT = "0" * 24 + ":" + "1" * 32 + ":abcd"


def test_committed_documents_are_up_to_date() -> None:
    assert (DOCS / "asyncapi.json").read_text() == render(asyncapi_document()), "run: python -m schemas.export docs"
    for name, schema in json_schemas().items():
        assert (DOCS / "schemas" / f"{name}.json").read_text() == render(schema), name


def _events() -> list[object]:
    user = uuid.uuid4()
    soon = datetime.now(UTC) + timedelta(minutes=5)
    return [
        ConnectionCreated(
            user_id=user, platform="spotify", access_token=CIPHERTEXT, refresh_token=None, token_expires_at=soon
        ),
        TokenExpiring(user_id=user, platform="spotify", token_expires_at=soon, reason="manual"),
        TokenRefreshed(
            user_id=user,
            platform="spotify",
            token_expires_at=soon,
            expires_in=3600,
            attempts=1,
            duration_ms=12,
            refresh_token_rotated=False,
            reason="scheduled",
        ),
        TokenNeedsReauth(user_id=user, platform="spotify", reason="invalid_grant", error="invalid_grant"),
        TokenRefreshFailed(
            user_id=user, platform="spotify", error_class="network", status="connected", will_retry=True
        ),
        ProviderCircuitChanged(platform="spotify", state="open", worker="host-a:4242", cool_down_seconds=30.0),
        ProviderCircuitChanged(platform="spotify", state="closed", worker="host-a:4242", open_seconds=61.5),
    ]


@pytest.mark.parametrize("event", _events(), ids=lambda e: type(e).__name__)
def test_every_event_the_service_writes_validates_against_its_published_schema(event: object) -> None:
    payload = json.loads(event.to_bytes())  # type: ignore[attr-defined]
    validate(payload, json_schemas()[payload["event_type"]])


@pytest.mark.parametrize(
    "mutation",
    [
        {"user_id": "user-42"},
        {"schema_version": 2},
        {"access_token": "sbx_at_plaintext"},
        {"platform": "Spotify!"},
    ],
    ids=str,
)
def test_published_schema_rejects_what_the_service_would_dead_letter(mutation: dict[str, object]) -> None:
    payload = json.loads(_events()[0].to_bytes()) | mutation  # type: ignore[attr-defined]
    with pytest.raises(jsonschema.ValidationError):
        validate(payload, json_schemas()["connection.created"])


@pytest.mark.parametrize("scope", ["repo\u0000", "a\tb", "line\n", "\u001b[31m", "del\u007f", "c1\u0085"], ids=repr)
def test_published_schema_rejects_a_scope_with_a_control_character(scope: str) -> None:
    payload = json.loads(_events()[0].to_bytes()) | {"scopes": ["user-read-email", scope]}  # type: ignore[attr-defined]
    with pytest.raises(jsonschema.ValidationError):
        validate(payload, json_schemas()["connection.created"])


def test_published_schema_accepts_the_scopes_the_service_accepts() -> None:
    scopes = ["https://www.googleapis.com/auth/gmail.readonly", "chat:write", "", "é ☃ 😀", "\u00a0"]
    payload = json.loads(_events()[0].to_bytes()) | {"scopes": scopes}  # type: ignore[attr-defined]
    validate(payload, json_schemas()["connection.created"])
    assert ConnectionCreated.model_validate(payload).scopes == scopes


def test_asyncapi_describes_every_topic_and_its_direction() -> None:
    document = asyncapi_document()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {
        *EVENT_TYPES,
        "provider.circuit_changed",
        "connection.created.dlq",
        "token.expiring.dlq",
        "connection.disconnected.dlq",
    }
    actions = {op["channel"]["$ref"].split("/")[-1]: op["action"] for op in document["operations"].values()}
    assert actions["connection_created"] == "receive" and actions["token_refreshed"] == "send"
    assert actions["provider_circuit_changed"] == "send"
    assert document["channels"]["provider_circuit_changed"]["description"].endswith("Key: '<platform>' (UTF-8).")
    assert document["channels"]["token_refreshed"]["description"].endswith("Key: '<user_id>:<platform>' (UTF-8).")
    for message in document["components"]["messages"].values():
        schema_name = message["payload"]["$ref"].split("/")[-1]
        assert schema_name in document["components"]["schemas"]
