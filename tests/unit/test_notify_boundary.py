"""The notifier is what an outside team would write: its modules import only the standard
library, third-party packages, ``schemas`` (the wire format) and ``stream_app.notify``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import stream_app.notify

NOTIFY = Path(stream_app.notify.__file__).parent
OWN_TOP_LEVEL = {"stream_app", "agents", "tests", "benchmarks", "scripts"}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "schemas":
        return True
    if module == "stream_app.notify" or module.startswith("stream_app.notify."):
        return True
    return top not in OWN_TOP_LEVEL  # a third-party package


def test_the_boundary_rule_itself() -> None:
    assert allowed("asyncio") and allowed("schemas.events") and allowed("aiohttp.web")
    assert allowed("stream_app.notify.channel")
    assert not allowed("stream_app.settings") and not allowed("stream_app") and not allowed("agents")
    assert not allowed("stream_app.notifyx")


def test_the_notifier_imports_nothing_of_the_service() -> None:
    files = sorted(NOTIFY.rglob("*.py"))
    assert NOTIFY / "worker.py" in files
    offences = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported_modules(tree):
            if not allowed(module):
                offences.append(f"{path.relative_to(NOTIFY.parent.parent)}:{line} imports {module}")
    assert offences == []
