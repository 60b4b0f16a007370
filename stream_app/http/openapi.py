"""The HTTP API's OpenAPI document, checked in as docs/openapi.json (a test keeps it current).

python -m stream_app.http.openapi docs/openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from stream_app.http.app import bare_app


def openapi_document() -> dict[str, Any]:
    """Every route, the optional token endpoint included."""
    return bare_app(token_endpoint=True).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(render(openapi_document()))
