"""Keeping a channel's URL out of httpx's log lines."""

from __future__ import annotations

import logging
import re

import httpx


class HiddenUrl(logging.Filter):
    """httpx logs every request's URL at INFO ("HTTP Request: POST <url> ..."), whatever the
    notifier's own log configuration; a URL may be a credential (Slack's webhook), hold one (user
    info, a query key) or hold a user's id. Any word of a line that holds the URL's host and path
    (as given or as httpx writes it; its query and user info with it) is replaced by ``label``.
    ``install()`` puts it on httpx's logger, ``remove()`` takes it off."""

    def __init__(self, url: str, label: str) -> None:
        super().__init__()
        parsed = httpx.URL(url)
        port = f":{parsed.port}" if parsed.port else ""
        raw_path = parsed.raw_path.decode("ascii", "replace").partition("?")[0]
        anchors = {f"{parsed.host}{port}{path}" for path in (parsed.path, raw_path)}
        self._words = re.compile(r"\S*(?:" + "|".join(map(re.escape, sorted(anchors))) + r")\S*")
        self._label = label

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        hidden = self._words.sub(self._label, text)
        if hidden != text:
            record.msg, record.args = hidden, None
        return True

    def install(self) -> HiddenUrl:
        logging.getLogger("httpx").addFilter(self)
        return self

    def remove(self) -> None:
        logging.getLogger("httpx").removeFilter(self)
