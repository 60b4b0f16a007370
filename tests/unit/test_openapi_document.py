"""docs/openapi.json is the HTTP API as served: regenerate it when a route changes."""

from __future__ import annotations

from pathlib import Path

from stream_app.http.openapi import openapi_document, render

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_document_is_up_to_date() -> None:
    assert DOCUMENT.read_text() == render(openapi_document()), (
        "run: python -m stream_app.http.openapi docs/openapi.json"
    )


def test_admin_routes_declare_their_answers_and_hold_no_token_field() -> None:
    document = openapi_document()
    paths = document["paths"]
    for path in ("/healthz", "/readyz", "/metrics", "/connections", "/platforms/health"):
        assert path in paths, path
    assert "/connections/{user_id}/{platform}/refresh" in paths
    schemas = document["components"]["schemas"]
    token_fields = {
        name
        for name, schema in schemas.items()
        for field in schema.get("properties", {})
        if "token" == field.split("_")[-1]
    }
    assert token_fields == {"AccessToken"}, "only the token endpoint's answer may carry a token"
