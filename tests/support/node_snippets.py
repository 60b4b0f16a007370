"""The Node snippets of docs/security.md, run as documented (the block after ``<!-- snippet: NAME -->``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def snippet(name: str, doc: Path = DOC, language: str = "js") -> str:
    """The ```js (or ``language``) block that follows the marker ``<!-- snippet: name -->``."""
    marker = rf"<!-- snippet: {re.escape(name)} -->\s*```{language}\n(.*?)```"
    found = re.search(marker, doc.read_text(), re.DOTALL)
    if found is None:
        raise AssertionError(f"{doc.name} has no snippet {name!r}")
    return found.group(1)


def run_node(names: list[str], driver: str, argument: Any) -> Any:
    """Run the snippets ``names`` with ``driver`` (which reads ``input`` and prints JSON)."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("node is not installed")
    # Each snippet declares `crypto`; one declaration for all of them.
    bodies = [snippet(name).replace("const crypto = require('node:crypto');", "") for name in names]
    script = "\n".join(
        ["const crypto = require('node:crypto');", *bodies, "const input = JSON.parse(process.argv[1]);", driver]
    )
    completed = subprocess.run([node, "-e", script, json.dumps(argument)], capture_output=True, check=True, timeout=30)
    return json.loads(completed.stdout)
