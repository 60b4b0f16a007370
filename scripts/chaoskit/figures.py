"""The figures of a chaos run, each computed from ground truth gathered after the run.

Pure functions of :class:`Evidence`: the sandbox's grants and fault rules, the database's
final rows (tokens decrypted), what the run observed while it went, every record of the
run's topics, the consumer group's offsets, and every text the service produced. The exact
definitions are in docs/reliability.md; each docstring below is the short form.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ConnectionKey = tuple[str, str]  # (user_id, platform)
TOKEN_PATTERN = re.compile(rb"sbx_(?:at|rt)_[A-Za-z0-9_-]{32}")
EVENT_TIME_TOLERANCE = 0.002  # seconds: database microseconds vs the event's RFC 3339 text
OUTAGE_RECOVERY_SECONDS = 30.0  # after a window ends: breaker cool-down and backoff catch up
# An answer the provider sent this shortly before a kill -9 may not have been committed yet.
KILL_WINDOW_BEFORE_SECONDS = 1.0


@dataclass(frozen=True)
class Connection:
    user_id: str
    platform: str
    grant_id: str

    @property
    def key(self) -> ConnectionKey:
        return (self.user_id, self.platform)


@dataclass(frozen=True)
class StoredRow:
    status: str
    access_token: str | None  # decrypted; None when absent or not decryptable
    refresh_token: str | None
    token_expires_at: float | None
    last_refreshed_at: float | None


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def json(self) -> dict[str, Any] | None:
        try:
            decoded = json.loads(self.value or b"")
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) else None


@dataclass
class Evidence:
    connections: list[Connection]
    grants: dict[str, dict[str, Any]]  # the sandbox's snapshots
    revoked_by_run: dict[str, float]  # grant id -> when the run revoked it on purpose
    fault_rules: list[dict[str, Any]]
    rows: dict[ConnectionKey, StoredRow]
    expiries: dict[ConnectionKey, dict[float, float]]  # observed expired tokens (expiry -> seen at)
    refreshed_states: dict[ConnectionKey, set[float]]
    outbox: list[tuple[str, str, bool]]  # (event id, topic, published)
    records: list[Record]
    topics: dict[str, str]  # default name -> the run's name
    offsets: dict[tuple[str, int], tuple[int, int]]  # (topic, partition) -> (committed, end)
    texts: list[tuple[str, bytes]]  # (where, content) for the plain-text search
    issued: set[str]
    clean_started_at: float
    excused: list[tuple[str, float, float]] = field(default_factory=list)  # (platform or *, from, to)
    kills: list[float] = field(default_factory=list)  # when a worker was killed with kill -9
    call_deadline: float = 0.0  # the workers' HTTP_TIMEOUT_SECONDS


@dataclass
class Figure:
    name: str
    count: int
    examples: list[str] = field(default_factory=list)
    note: str = ""
    # Shown, but not held against the service (the exit code ignores it).
    informational: bool = False


def _alive(evidence: Evidence, connection: Connection) -> bool:
    return connection.grant_id not in evidence.revoked_by_run


def _rotation_lost(grant: dict[str, Any], row: StoredRow | None) -> bool:
    rotated = bool(grant["spent_refresh_tokens"]) or len(grant["valid_refresh_tokens"]) > 1
    return rotated and (row is None or row.refresh_token != grant["live_refresh_token"])


def lost_at_a_kill(evidence: Evidence) -> set[str]:
    """Grants whose lost rotation the provider answered while the worker that asked was being
    killed (kill -9): from KILL_WINDOW_BEFORE_SECONDS before the kill to one call deadline
    after it. The provider rotated, the answer reached no process: no client can keep it, so
    this loss and what follows from it (the spent token presented again, needs_reauth, the
    token expiring) are reported on their own row instead of the figures below."""
    found = set()
    for connection in evidence.connections:
        grant, row = evidence.grants[connection.grant_id], evidence.rows.get(connection.key)
        if not _rotation_lost(grant, row) or not grant["refreshed_at"]:
            continue
        rotated_at = max(grant["refreshed_at"])
        if any(k - KILL_WINDOW_BEFORE_SECONDS <= rotated_at <= k + evidence.call_deadline for k in evidence.kills):
            found.add(connection.grant_id)
    return found


def _held_against_the_service(evidence: Evidence) -> list[Connection]:
    excused = lost_at_a_kill(evidence)
    return [c for c in evidence.connections if c.grant_id not in excused]


def in_flight_at_a_kill(evidence: Evidence) -> Figure:
    """Rotations lost because the worker was killed while the provider answered (see lost_at_a_kill)."""
    found = sorted(lost_at_a_kill(evidence))
    return Figure("rotations in flight at a kill -9 (no client can keep them)", len(found), found, informational=True)


def stranded(evidence: Evidence) -> Figure:
    """Alive grants whose connection is missing, not `connected`, holds a refresh token the
    sandbox no longer accepts, or was not refreshed during the clean round."""
    found = []
    for connection in _held_against_the_service(evidence):
        if not _alive(evidence, connection):
            continue
        grant, row = evidence.grants[connection.grant_id], evidence.rows.get(connection.key)
        refreshed_clean = any(at > evidence.clean_started_at for at in grant["refreshed_at"])
        if row is None:
            found.append(f"{connection.grant_id}:no row")
        elif row.status != "connected":
            found.append(f"{connection.grant_id}:status {row.status}")
        elif grant["revoked"] or row.refresh_token not in grant["valid_refresh_tokens"]:
            found.append(f"{connection.grant_id}:refresh token not accepted")
        elif not refreshed_clean:
            found.append(f"{connection.grant_id}:not refreshed in the clean round")
    return Figure("stranded connections", len(found), found)


def false_needs_reauth(evidence: Evidence) -> Figure:
    """Connections marked needs_reauth (final status, or a token.needs_reauth event) while
    their grant was alive: never revoked by the run, or the event came before the revocation."""
    by_key = {c.key: c for c in _held_against_the_service(evidence)}
    found: dict[ConnectionKey, str] = {}
    for record in _records(evidence, "token.needs_reauth"):
        event = record.json() or {}
        connection = by_key.get((str(event.get("user_id")), str(event.get("platform"))))
        if connection is None:
            continue
        revoked_at = evidence.revoked_by_run.get(connection.grant_id)
        if revoked_at is None or _time(event.get("occurred_at")) < revoked_at:
            found.setdefault(connection.key, f"{connection.grant_id}:event {event.get('reason')}")
    for connection in by_key.values():
        row = evidence.rows.get(connection.key)
        if _alive(evidence, connection) and row is not None and row.status == "needs_reauth":
            found.setdefault(connection.key, f"{connection.grant_id}:status needs_reauth")
    return Figure("false needs_reauth", len(found), list(found.values()))


def double_spends(evidence: Evidence) -> Figure:
    """Presentations of a spent single-use refresh token, as the sandbox counted them."""
    excused = lost_at_a_kill(evidence)
    spent = {gid: g["double_spends"] for gid, g in evidence.grants.items() if g["double_spends"] and gid not in excused}
    return Figure("double spends", sum(spent.values()), [f"{gid}:x{n}" for gid, n in spent.items()])


def rotated_tokens_lost(evidence: Evidence) -> Figure:
    """Grants that rotated whose live refresh token is not the one the database holds."""
    found = []
    for connection in _held_against_the_service(evidence):
        grant, row = evidence.grants[connection.grant_id], evidence.rows.get(connection.key)
        if _rotation_lost(grant, row):
            found.append(connection.grant_id)
    return Figure("rotated tokens lost", len(found), found)


def excused_windows(
    fault_rules: list[dict[str, Any]], pool_hold: tuple[float, float] | None
) -> list[tuple[str, float, float]]:
    """When an expiry is not held against the service: a platform's outage or throttling
    (rules of probability 1) plus its recovery, and the pool-exhaustion hold plus recovery."""
    windows = []
    for rule in fault_rules:
        if rule["probability"] < 1 or rule["ends_at"] is None or rule["ends_at"] <= rule["starts_at"]:
            continue
        recovery = OUTAGE_RECOVERY_SECONDS + (rule["retry_after"] if rule["mode"] == "rate_limit" else 0)
        windows.append((rule["platform"], rule["starts_at"], rule["ends_at"] + recovery))
    if pool_hold is not None:
        windows.append(("*", pool_hold[0], pool_hold[1] + OUTAGE_RECOVERY_SECONDS))
    return windows


def _covers(window_platform: str, platform: str) -> bool:
    google = ("youtube", "gmail", "google_calendar")
    return window_platform in ("*", platform) or (window_platform == "google" and platform in google)


def expired_while_healthy(evidence: Evidence) -> Figure:
    """Alive connections whose stored access token was seen expired (by more than the grace)
    at an expiry time outside every excused window of its platform."""
    found = []
    for connection in _held_against_the_service(evidence):
        if not _alive(evidence, connection):
            continue
        for expires_at in sorted(evidence.expiries.get(connection.key, {})):
            if not any(
                _covers(p, connection.platform) and start <= expires_at <= end for p, start, end in evidence.excused
            ):
                found.append(f"{connection.grant_id}@{datetime.fromtimestamp(expires_at).strftime('%H:%M:%S')}")
                break
    return Figure("tokens expired while their provider was healthy", len(found), found)


def events_without_outcome(evidence: Evidence) -> Figure:
    """(a) outbox events never seen on their topic; (b) refreshed states the database held
    with no token.refreshed event carrying that expiry; (c) connection.created events with
    neither a row nor a dead letter."""
    found = []
    on_topics = {(r.topic, str((r.json() or {}).get("event_id"))) for r in evidence.records}
    for event_id, topic, published in evidence.outbox:
        if (topic, event_id) not in on_topics:
            found.append(f"outbox {event_id}:{'published' if published else 'unpublished'}, not on {topic}")
    announced: dict[ConnectionKey, list[float]] = {}
    for record in _records(evidence, "token.refreshed"):
        event = record.json() or {}
        expires = event.get("token_expires_at")
        if expires is not None:
            announced.setdefault((str(event.get("user_id")), str(event.get("platform"))), []).append(_time(expires))
    by_key = {c.key: c for c in evidence.connections}
    for key, states in evidence.refreshed_states.items():
        for expires_at in states:
            if not any(abs(expires_at - seen) <= EVENT_TIME_TOLERANCE for seen in announced.get(key, [])):
                found.append(f"{by_key[key].grant_id if key in by_key else key}:refresh without token.refreshed")
    dead_lettered = {
        (r.key or b"").decode(errors="replace") for r in _records(evidence, "connection.created", dlq=True)
    }
    for connection in evidence.connections:
        if connection.key not in evidence.rows and ":".join(connection.key) not in dead_lettered:
            found.append(f"{connection.grant_id}:connection.created without row or dead letter")
    return Figure("events without an outcome", len(found), found)


def stopped_partitions(evidence: Evidence) -> Figure:
    """Partitions of connection.created and token.expiring whose committed offset did not
    reach the end offset."""
    found = [f"{t}[{p}] {c}/{e}" for (t, p), (c, e) in sorted(evidence.offsets.items()) if c < e]
    return Figure("partitions whose committed offset stopped", len(found), found)


def plaintext_found(evidence: Evidence) -> Figure:
    """Tokens the sandbox issued found in a topic (dead letters decoded), a worker log,
    /metrics or the database."""
    found: dict[str, None] = {}
    for where, content in _haystacks(evidence):
        for match in TOKEN_PATTERN.findall(content):
            token = match.decode()
            if token in evidence.issued:
                found.setdefault(f"{where}:{token[:10]}...", None)
    return Figure("plaintext found anywhere", len(found), list(found))


def _haystacks(evidence: Evidence) -> Iterable[tuple[str, bytes]]:
    yield from evidence.texts
    for record in evidence.records:
        yield record.topic, (record.key or b"") + b"\n" + (record.value or b"")
        if record.topic.endswith(".dlq"):
            encoded = (record.json() or {}).get("value_base64")
            if isinstance(encoded, str):
                yield record.topic, base64.b64decode(encoded)


def _records(evidence: Evidence, default_topic: str, *, dlq: bool = False) -> list[Record]:
    topic = evidence.topics[default_topic] + (".dlq" if dlq else "")
    return [r for r in evidence.records if r.topic == topic]


def _time(text: Any) -> float:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


FIGURES = (
    stranded,
    false_needs_reauth,
    double_spends,
    rotated_tokens_lost,
    expired_while_healthy,
    events_without_outcome,
    stopped_partitions,
    plaintext_found,
    in_flight_at_a_kill,
)


def compute(evidence: Evidence) -> list[Figure]:
    return [figure(evidence) for figure in FIGURES]


def table(figures: list[Figure], examples: int = 3) -> str:
    width = max(len(f.name) + 2 for f in figures)
    lines = [f"| {'figure':<{width}} | count | examples |", f"|{'-' * (width + 2)}|------:|----------|"]
    for figure in figures:
        shown = ", ".join(figure.examples[:examples]) + (" ..." if len(figure.examples) > examples else "")
        name = figure.name + (" *" if figure.informational else "")
        lines.append(f"| {name:<{width}} | {figure.count:>5} | {shown or '-'} |")
    if any(figure.informational for figure in figures):
        lines.append("\n\\* informational: not held against the service (see docs/reliability.md)")
    return "\n".join(lines)
