"""The messages' text: Jinja2 templates per kind and platform, overridable from a folder.

Names (flat, in ``templates/`` here or in ``NOTIFY_EMAIL_TEMPLATES_DIR``, searched first):
``<platform>.<kind>.subject.txt``, ``<platform>.<kind>.txt``, ``<platform>.<kind>.html``, each
falling back to ``default.<kind>.*``; the HTML ones extend ``layout.html``. HTML is autoescaped.
Every template is compiled and rendered once with sample values at start-up (``check``), so a
broken override stops the notifier instead of every delivery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jinja2

from stream_app.notify.notice import display_name
from stream_app.notify.printable import one_line

EmailKind = Literal["needs_reauth", "recovered"]
KINDS: tuple[EmailKind, ...] = ("needs_reauth", "recovered")
PARTS = ("subject.txt", "txt", "html")
DEFAULT = "default"
_DEFAULTS_DIR = Path(__file__).parent / "templates"
_PLATFORM = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NAME = re.compile(r"^(?P<platform>[a-z][a-z0-9_]{0,31})\.(?P<kind>[a-z_]+)\.(?:subject\.txt|txt|html)$")

# What a token.needs_reauth's reason means, for people.
REASON_TEXTS = {
    "invalid_grant": "the access was revoked or has expired",
    "missing_refresh_token": "the access granted cannot be renewed",
}


class TemplateProblem(ValueError):
    """A template that does not compile or render; one line, naming the file."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class Templates:
    def __init__(self, override_dir: Path | None = None, *, reconnect_url: str | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(_DEFAULTS_DIR)]
        if override_dir is not None:
            loaders.insert(0, jinja2.FileSystemLoader(override_dir))
        self._override_dir = override_dir
        self._reconnect_url = reconnect_url
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def render(
        self,
        kind: EmailKind,
        platform: str,
        *,
        occurred_at: datetime,
        user_name: str | None = None,
        reason: str | None = None,
    ) -> Rendered:
        reason = one_line(reason) if reason else reason  # as a template may quote it
        context: dict[str, Any] = {
            "kind": kind,
            "platform": platform,
            "display_name": display_name(platform),
            "user_name": user_name,
            "occurred_at": occurred_at.astimezone(UTC),
            "reason": reason,
            "reason_text": REASON_TEXTS.get(reason or ""),
            "reconnect_url": self._reconnect_url.format(platform=platform) if self._reconnect_url else None,
        }
        subject, text, html = (self._template(kind, platform, part).render(context) for part in PARTS)
        return Rendered(subject=" ".join(subject.split()), text=text, html=html)

    def check(self) -> None:
        """Compile and render every template a notice could use (the defaults, and each
        platform's overrides) with sample values; raise TemplateProblem on the first failure."""
        platforms = {DEFAULT} | self._overridden_platforms()
        moment = datetime(2026, 1, 1, tzinfo=UTC)
        for kind in KINDS:
            for platform in sorted(platforms):
                try:
                    rendered = self.render(kind, platform, occurred_at=moment, user_name="Alex", reason="invalid_grant")
                    self.render(kind, platform, occurred_at=moment)
                except jinja2.TemplateSyntaxError as exc:
                    raise TemplateProblem(f"{exc.name or exc.filename} line {exc.lineno}: {_one_line(exc)}") from None
                except jinja2.TemplateError as exc:
                    names = ", ".join(self._names(kind, platform))
                    raise TemplateProblem(f"{names}: {type(exc).__name__}: {_one_line(exc)}") from None
                if not rendered.subject:
                    raise TemplateProblem(f"{self._template(kind, platform, 'subject.txt').name}: empty subject")

    def _template(self, kind: EmailKind, platform: str, part: str) -> jinja2.Template:
        names = [f"{DEFAULT}.{kind}.{part}"]
        if _PLATFORM.match(platform) and platform != DEFAULT:
            names.insert(0, f"{platform}.{kind}.{part}")
        return self._env.select_template(names)

    def _names(self, kind: EmailKind, platform: str) -> list[str]:
        return [str(self._template(kind, platform, part).name) for part in PARTS]

    def _overridden_platforms(self) -> set[str]:
        if self._override_dir is None:
            return set()
        return {
            found.group("platform")
            for path in self._override_dir.iterdir()
            if (found := _NAME.match(path.name)) and found.group("kind") in KINDS
        }


def _one_line(exc: Exception) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
