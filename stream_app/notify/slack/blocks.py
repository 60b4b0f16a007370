"""Block Kit payloads (https://api.slack.com/block-kit) of the Slack channel's messages.

Every message is ``{"text": <fallback>, "blocks": [...]}``: the text is what notifications and
clients without blocks show. Everything that comes from an event is escaped the way Slack asks
(``&``, ``<``, ``>`` as HTML entities) and every mrkdwn text is ``verbatim`` (Slack does not
auto-link names or URLs in it), so no field of an event can mention anyone or make a link; the
only markup is the channel's own (the configured mention, dates, the dashboard button).
Slack's limits are enforced here: at most 50 blocks, a section's text at most 3000 characters,
a header's 150, at most 10 fields of 2000, at most 10 context elements.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from stream_app.notify.notice import Notice, display_name
from stream_app.notify.printable import UNPRINTABLE

Block = dict[str, Any]
Payload = dict[str, Any]

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_TEXT = 3000
MAX_VALUE = 200  # one value from an event (an error class, a reason, a worker's name)
MAX_REASONS = 10  # lines of a digest's breakdown; the rest are summed as "other reasons"
MAX_EXAMPLES = 5  # example connection references in a digest

_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")

UserRef = Callable[[uuid.UUID | None], str]


def user_reference(key: str | None) -> UserRef:
    """How a connection is named in the ops channel (never its raw user id).

    With a key: HMAC-SHA256 under a key derived from it, 8 hex: the service's own log hash
    (stream_app.privacy) when given the service's LOG_HASH_KEY, so a message can be matched with
    the service's log lines, yet not reversed from a user table. Without: the user id's first
    8 hex digits (enough to find the row, ``user_id::text LIKE 'ab12cd34%'``, not the id)."""
    if key is None:
        return lambda user_id: "-" if user_id is None else user_id.hex[:8]
    derived = hmac.new(key.encode(), b"token-refresh/user-id-log-hash", hashlib.sha256).digest()
    return lambda user_id: (
        "-" if user_id is None else hmac.new(derived, str(user_id).encode(), hashlib.sha256).hexdigest()[:8]
    )


def escape(text: str) -> str:
    """Slack's escaping of text that is not markup (and no control characters nor lone surrogates)."""
    text = UNPRINTABLE.sub(" ", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, never inside an escape (``&amp;``)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    cut = _ENTITY_TAIL.sub("", cut)
    return cut + "…"


def value(event: Mapping[str, Any], field: str) -> str:
    """One field of an event, escaped and bounded; ``unknown`` when absent."""
    raw = event.get(field)
    if raw is None or raw == "":
        return "unknown"
    return truncate(escape(str(raw)), MAX_VALUE)


# -- blocks ---------------------------------------------------------------------------------


def header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER_TEXT)}}


def section(mrkdwn: str, fields: Sequence[str] = ()) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(mrkdwn, MAX_SECTION_TEXT)}
    if fields:
        block["fields"] = [_mrkdwn(field, MAX_FIELD_TEXT) for field in fields[:MAX_FIELDS]]
    return block


def context(*elements: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(e, MAX_FIELD_TEXT) for e in elements[:MAX_CONTEXT_ELEMENTS]]}


def dashboard_button(url: str) -> Block:
    return {
        "type": "actions",
        "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open dashboard"}, "url": url}],
    }


def _mrkdwn(text: str, limit: int) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, limit), "verbatim": True}


def message(text: str, blocks: list[Block], dashboard_url: str | None) -> Payload:
    """The payload: the fallback text, the blocks (at most 50, the button kept), no unfurling."""
    if dashboard_url is not None:
        blocks = [*blocks, dashboard_button(dashboard_url)]
    if len(blocks) > MAX_BLOCKS:
        tail = blocks[-1:] if dashboard_url is not None else []
        kept = blocks[: MAX_BLOCKS - 1 - len(tail)]
        blocks = [*kept, context(f"… {len(blocks) - len(kept) - len(tail)} more blocks not shown"), *tail]
    return {"text": truncate(text, MAX_FALLBACK_TEXT), "blocks": blocks, "unfurl_links": False, "unfurl_media": False}


def _utc(moment: datetime) -> datetime:
    """In UTC; a naive time is taken as UTC (as the notifier's store writes them)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def slack_date(moment: datetime) -> str:
    """A time every reader sees in their own time zone, with a UTC fallback."""
    moment = _utc(moment)
    fallback = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def duration(seconds: float) -> str:
    """30 s, 2 min, 1.5 h."""
    if seconds < 60:
        return f"{round(seconds, 1):g} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60):g} min"
    return f"{round(seconds / 3600, 1):g} h"


def _with_mention(mention: str | None, text: str) -> str:
    return f"{mention} {text}" if mention else text


# -- messages -------------------------------------------------------------------------------


def refresh_failed(notice: Notice, *, user_ref: UserRef, mention: str | None, dashboard_url: str | None) -> Payload:
    """A refresh that failed and will not be retried: the connection needs someone's attention."""
    name = escape(display_name(notice.platform))
    error_class = value(notice.event, "error_class")
    status = value(notice.event, "status")
    who = user_ref(notice.user_id)
    summary = f"{name}: a refresh failed and will not be retried ({error_class}, status {status})"
    blocks = [
        header(f"{name}: refresh failed, no retry"),
        section(
            _with_mention(mention, f"A *{name}* connection's refresh failed and will not be retried."),
            fields=[
                f"*Platform*\n{name}",
                f"*Error class*\n{error_class}",
                f"*Status*\n{status}",
                f"*Connection*\nuser {who}",
            ],
        ),
        context(f"Occurred {slack_date(notice.occurred_at)}", f"Event {notice.notice_id}"),
    ]
    return message(_with_mention(mention, f"{summary}, user {who}"), blocks, dashboard_url)


def circuit_changed(notice: Notice, *, mention: str | None, dashboard_url: str | None) -> Payload:
    """One worker's circuit breaker for a platform opened or closed."""
    name = escape(display_name(notice.platform))
    worker = value(notice.event, "worker")
    if notice.kind == "circuit_opened":
        cool_down = _seconds(notice.event, "cool_down_seconds")
        line = f"{name}: circuit opened on worker {worker}"
        if cool_down is not None:
            line += f" (cool-down {duration(cool_down)})"
        explanation = f"That worker stops calling {name} until a trial call after the cool-down succeeds."
        text = _with_mention(mention, line)
        title = f"{name}: circuit opened"
    else:
        open_for = _seconds(notice.event, "open_seconds")
        line = f"{name}: circuit closed on worker {worker}"
        if open_for is not None:
            line += f" after {duration(open_for)}"
        explanation = f"A trial call succeeded: that worker calls {name} again."
        text = line
        title = f"{name}: circuit closed"
    blocks = [
        header(title),
        section(f"{text}.\n{explanation}"),
        context(f"Occurred {slack_date(notice.occurred_at)}"),
    ]
    return message(text, blocks, dashboard_url)


def digest(
    platform: str,
    notices: Sequence[Notice],
    *,
    window_seconds: float,
    now: datetime,
    user_ref: UserRef,
    dashboard_url: str | None,
) -> Payload | None:
    """One platform's digest: how many connections need re-auth (by reason) and how many
    recovered. Counts, not lists of users. None when there is nothing to count."""
    name = escape(display_name(platform))
    needing = _latest_per_connection(n for n in notices if n.kind == "needs_reauth")
    recovered = _latest_per_connection(n for n in notices if n.kind == "recovered")
    if not needing and not recovered:
        return None
    lines: list[str] = []
    blocks: list[Block] = [header(f"{name}: connections digest")]
    if needing:
        oldest = min(n.occurred_at for n in notices if n.kind == "needs_reauth")
        count = len(needing)
        noun = "connection needs" if count == 1 else "connections need"
        line = f"{count} {name} {noun} re-auth {_period(oldest, now, window_seconds)}"
        lines.append(line)
        blocks.append(section(f"*{line}*"))
        blocks.append(section("*By reason*\n" + _breakdown(Counter(value(n.event, "reason") for n in needing))))
        examples = [user_ref(n.user_id) for n in needing[:MAX_EXAMPLES]]
        more = f" and {count - len(examples)} more" if count > len(examples) else ""
        blocks.append(context(f"e.g. users {', '.join(examples)}{more}"))
    if recovered:
        count = len(recovered)
        line = f"{count} {name} {'connection' if count == 1 else 'connections'} recovered"
        lines.append(line)
        blocks.append(section(f"*{line}*"))
    first = min(n.occurred_at for n in notices)
    last = max(n.occurred_at for n in notices)
    blocks.append(context(f"From {slack_date(first)} to {slack_date(last)}"))
    return message("; ".join(lines), blocks, dashboard_url)


def _latest_per_connection(notices: Iterable[Notice]) -> list[Notice]:
    latest: dict[uuid.UUID | str, Notice] = {}
    for notice in notices:
        key = notice.user_id if notice.user_id is not None else str(notice.notice_id)
        current = latest.get(key)
        if current is None or notice.occurred_at >= current.occurred_at:
            latest[key] = notice
    return sorted(latest.values(), key=lambda n: n.occurred_at)


def _breakdown(reasons: Counter[str]) -> str:
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"• {reason}: {count}" for reason, count in ranked[:MAX_REASONS]]
    rest = sum(count for _, count in ranked[MAX_REASONS:])
    if rest:
        lines.append(f"• {len(ranked) - MAX_REASONS} other reasons: {rest}")
    return "\n".join(lines)


def _period(oldest: datetime, now: datetime, window_seconds: float) -> str:
    """In the last hour while every notice is inside the window; otherwise since when."""
    oldest, now = _utc(oldest), _utc(now)
    if (now - oldest).total_seconds() > window_seconds:
        return f"since {oldest.strftime('%Y-%m-%d %H:%M UTC')}"
    minutes = round(window_seconds / 60)
    if minutes == 60:
        return "in the last hour"
    if minutes % 60 == 0:
        return f"in the last {minutes // 60} hours"
    if minutes <= 1:
        return "in the last minute"
    return f"in the last {minutes} minutes"


def _seconds(event: Mapping[str, Any], field: str) -> float | None:
    raw = event.get(field)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw or raw < 0 or raw > 1e9:
        return None
    return float(raw)
