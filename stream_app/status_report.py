"""`token-refresh status`: the seed's three monitoring queries, the outbox backlog, dead letters,
and the circuits of the workers named (read from their /metrics), as tables or JSON."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select

from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.models import ConnectionRow
from stream_app.http.operational import OperationalFigures
from stream_app.settings import Settings

_CIRCUIT_LINE = re.compile(r'^token_refresh_circuit_state\{platform="([^"]+)",state="([^"]+)"\} 1(?:\.0)?$', re.M)
WORKER_ANSWER_SECONDS = 3.0


@dataclass
class StatusReport:
    # The seed's monitoring queries (its guide's "Database Queries for Monitoring").
    expiring_within_hour: dict[str, int] = field(default_factory=dict)
    needing_reauth: dict[str, int] = field(default_factory=dict)
    failed_refreshes: list[tuple[str, str, int]] = field(default_factory=list)
    connections: dict[str, dict[str, int]] = field(default_factory=dict)
    outbox_unpublished: int = 0
    outbox_oldest_age_seconds: float = 0.0
    dead_letters: dict[str, int] = field(default_factory=dict)
    # Worker URL -> platform -> circuit state, or the reason it could not be read.
    circuits: dict[str, dict[str, str] | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def gather_status(settings: Settings, database: Database, workers: Sequence[str]) -> StatusReport:
    report = StatusReport()
    async with database.sessions() as session:
        within_hour = await session.execute(
            select(ConnectionRow.platform, func.count())
            .where(ConnectionRow.token_expires_at < utc_now() + timedelta(hours=1))
            .group_by(ConnectionRow.platform)
            .order_by(ConnectionRow.platform)
        )
        report.expiring_within_hour = {platform: count for platform, count in within_hour}
        reauth = await session.execute(
            select(ConnectionRow.platform, func.count())
            .where(ConnectionRow.status == "needs_reauth")
            .group_by(ConnectionRow.platform)
            .order_by(ConnectionRow.platform)
        )
        report.needing_reauth = {platform: count for platform, count in reauth}
        failed = await session.execute(
            select(ConnectionRow.platform, ConnectionRow.last_sync_error, func.count())
            .where(ConnectionRow.last_sync_status == "error")
            .group_by(ConnectionRow.platform, ConnectionRow.last_sync_error)
            .order_by(ConnectionRow.platform, func.count().desc())
        )
        report.failed_refreshes = [(platform, error or "", count) for platform, error, count in failed]
    stored = await OperationalFigures(settings, database, probe=None).stored()
    for (platform, status), count in sorted(stored.connections.items()):
        report.connections.setdefault(platform, {})[status] = count
    report.outbox_unpublished = stored.outbox_unpublished
    report.outbox_oldest_age_seconds = stored.outbox_oldest_age_seconds
    report.dead_letters = stored.dead_letters
    async with httpx.AsyncClient(timeout=WORKER_ANSWER_SECONDS) as http:
        for url in workers:
            report.circuits[url] = await _circuits(http, url)
    return report


async def _circuits(http: httpx.AsyncClient, base_url: str) -> dict[str, str] | str:
    try:
        answer = await http.get(f"{base_url.rstrip('/')}/metrics")
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return {platform: state for platform, state in _CIRCUIT_LINE.findall(answer.text)}


def render(report: StatusReport, console: Console) -> None:
    statuses = sorted({status for counts in report.connections.values() for status in counts})
    table = _table("Connections by platform and status")
    for column in ("platform", *statuses):
        table.add_column(column, justify="left" if column == "platform" else "right")
    for platform, counts in report.connections.items():
        table.add_row(platform, *(str(counts.get(status, 0)) for status in statuses))
    console.print(table)
    console.print(_counts("Tokens expiring in the next hour", report.expiring_within_hour))
    console.print(_counts("Connections needing re-auth", report.needing_reauth))
    failed = _table("Failed refresh attempts")
    failed.add_column("platform")
    failed.add_column("last_sync_error")
    failed.add_column("count", justify="right")
    for platform, error, count in report.failed_refreshes:
        failed.add_row(platform, escape(error), str(count))
    console.print(failed)
    pipeline = _table("Outbox and dead letters")
    pipeline.add_column("what")
    pipeline.add_column("value", justify="right")
    pipeline.add_row("outcome events not yet published", str(report.outbox_unpublished))
    pipeline.add_row("oldest unpublished (s)", f"{report.outbox_oldest_age_seconds:.0f}")
    for topic, count in sorted(report.dead_letters.items()):
        pipeline.add_row(f"dead letters in {topic} (token-refresh dlq show {topic})", str(count))
    console.print(pipeline)
    circuits = _table("Circuits (per worker)")
    circuits.add_column("worker")
    circuits.add_column("platform")
    circuits.add_column("state")
    for url, states in report.circuits.items():
        if isinstance(states, str):
            circuits.add_row(url, "-", states)
        elif not states:
            circuits.add_row(url, "-", "no platform called yet")
        for platform, state in sorted(states.items()) if isinstance(states, dict) else []:
            circuits.add_row(url, platform, state)
    console.print(circuits)


def _counts(title: str, counts: dict[str, int]) -> Table:
    table = _table(title)
    table.add_column("platform")
    table.add_column("count", justify="right")
    for platform, count in counts.items():
        table.add_row(platform, str(count))
    if not counts:
        table.add_row("(none)", "0")
    return table


def _table(title: str) -> Table:
    return Table(title=title, min_width=len(title) + 4)  # a title wider than its table would wrap
