"""``token-refresh``: the one command line of the service (contract §9).

Every failure ends with one line on stderr and a non-zero exit code. Heavy modules (Faust,
the database layer, the sandbox) are imported inside the commands that need them, so
``--help`` and ``keygen`` answer at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from stream_app.crypto import generate_key
from stream_app.errors import ConfigurationError, TokenRefreshError
from stream_app.kafka_client import cap_client_logging
from stream_app.settings import Settings, load_settings

T = TypeVar("T")
EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"token-refresh: {message}", err=True)
    sys.exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigurationError as exc:
        _fail(f"configuration error: {exc}", EXIT_CONFIGURATION)


def _run(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(coroutine_factory())
    except TokenRefreshError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{type(exc).__name__}: {exc}")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cap_client_logging()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Keep OAuth access tokens valid for every (user, platform) connection."""


@cli.command()
def keygen() -> None:
    """Print a new ENCRYPTION_KEY (64 hex characters)."""
    click.echo(generate_key())


@cli.command()
@click.option(
    "--adopt",
    is_flag=True,
    help="Take over the Node service's platform_connections (checked, stamped, new columns added, "
    "its data untouched; docs/takeover.md). A no-op on a database already migrated.",
)
def migrate(adopt: bool) -> None:
    """Apply the database migrations (DATABASE_URL) up to the newest."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from stream_app.db import Database
    from stream_app.db.migrate import adopt_and_upgrade, current_revision, upgrade_to_head

    settings = _settings()
    _configure_logging(settings.log_level)

    async def run() -> tuple[str | None, str]:
        database = Database(settings.database_url.get_secret_value())
        try:
            done = ""
            if adopt:
                adoption = await adopt_and_upgrade(database)
                done = "nothing to adopt (no unmigrated Node table); "
                if adoption is not None:
                    kept = f", kept its own columns {', '.join(adoption.kept_columns)}" if adoption.kept_columns else ""
                    done = f"adopted the Node service's platform_connections ({adoption.rows} rows{kept}); "
            else:
                await upgrade_to_head(database)
            return await current_revision(database), done
        finally:
            await database.dispose()

    try:
        revision, done = asyncio.run(run())
    except ConfigurationError as exc:  # an unmigrated Node table, or one adoption refuses
        _fail(str(exc), EXIT_CONFIGURATION)
    except (TokenRefreshError, OSError) as exc:
        _fail(str(exc) if isinstance(exc, TokenRefreshError) else f"{type(exc).__name__}: {exc}")
    except CommandError as exc:
        _fail(f"migration failed: {exc}")
    except DBAPIError as exc:
        _fail(f"migration failed: {type(exc.orig).__name__}: {next(iter(str(exc.orig).splitlines()), '')}")
    click.echo(f"{done}database at revision {revision}")


@cli.command()
def worker() -> None:
    """Run the stream processor (Faust worker): consume, refresh, publish outcomes."""
    settings = _settings()
    _check_broker(settings.kafka_bootstrap_servers)
    _run(lambda: _prepare(settings))
    use_event_loop(settings.event_loop)  # before Faust's worker makes its loop
    # The composition root is the one place that wires the agent layer to the engine.
    import faust

    import agents
    from stream_app.faust_app import create_app
    from stream_app.service import TokenService

    app = create_app(settings)
    try:
        agents.register(app, TokenService(settings))
    except ConfigurationError as exc:  # HTTP_PORT in use
        _fail(f"configuration error: {exc}", EXIT_CONFIGURATION)
    cap_client_logging()
    faust.Worker(
        app, loglevel=settings.log_level, quiet=True, logging_config=_PLAIN_WORKER_LOGS
    ).execute_from_commandline()


@cli.command()
def api() -> None:
    """Run the HTTP API alone (HTTP_HOST:HTTP_PORT): admin endpoints, dashboard, health, metrics;
    refreshes it is asked for run here. Workers serve the same API themselves."""
    from stream_app.http import HttpServer, create_app
    from stream_app.service import TokenService

    settings = _settings()
    _configure_logging(settings.log_level)
    if not settings.http_port:
        _fail("configuration error: HTTP_PORT: is 0 (off); `token-refresh api` needs a port", EXIT_CONFIGURATION)

    async def run() -> None:
        service = TokenService(settings)
        try:
            server = HttpServer(create_app(service), settings.http_host, settings.http_port)
        except ConfigurationError as exc:
            await service.aclose()
            _fail(f"configuration error: {exc}", EXIT_CONFIGURATION)
        click.echo(f"token-refresh API listening on http://{settings.http_host}:{server.port}", err=True)
        try:
            await server.serve()
        finally:
            await service.aclose()

    try:
        _run(run)
    except KeyboardInterrupt:
        pass


@cli.command()
def notify() -> None:
    """Run the notifier (its own consumer group, <KAFKA_APP_ID>-notify): email, Slack and signed
    webhooks told of the outcome events, as configured (docs/notifiers.md); until SIGTERM/SIGINT."""
    from stream_app.notify.settings import NotifyConfigurationError, load_notify_settings
    from stream_app.notify.worker import run_notifier

    try:
        settings = load_notify_settings()
    except NotifyConfigurationError as exc:
        _fail(f"configuration error: {exc}", EXIT_CONFIGURATION)
    _configure_logging(settings.log_level)
    _check_broker(settings.kafka_bootstrap_servers)
    try:
        _run(lambda: run_notifier(settings))
    except NotifyConfigurationError as exc:
        _fail(f"configuration error: {exc}", EXIT_CONFIGURATION)


def use_event_loop(name: str) -> None:
    """Make new event loops of this process ``name``'s (uvloop or asyncio's own)."""
    import mode.loop

    mode.loop.use("uvloop" if name == "uvloop" else "aio")


# mode's logging for the worker, with a plain handler in place of its colour one: the log is
# read by machines (files, collectors) more than by terminals, and colorlog re-renders its
# escape codes for every line, at every refresh.
_PLAIN_WORKER_LOGS = {
    "merge": True,
    "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default"}},
}


async def _prepare(settings: Settings) -> None:
    """Topics exist with the configured partitions; the embedded SQLite default migrates
    itself, a shared database must have been migrated (`token-refresh migrate`); no real
    client is pointed at the sandbox, and every platform with connections to refresh has its
    client credentials."""
    from stream_app.db import Database
    from stream_app.db.migrate import current_revision, head_revision, upgrade_to_head
    from stream_app.kafka_client import ensure_topics
    from stream_app.startup_checks import (
        refuse_foreign_credentials_at_the_sandbox,
        refuse_platforms_without_credentials,
    )

    await refuse_foreign_credentials_at_the_sandbox(settings)
    await ensure_topics(settings)

    database = Database(settings.database_url.get_secret_value())
    try:
        if database.is_sqlite:
            await upgrade_to_head(database)
        elif await current_revision(database) != head_revision():
            raise ConfigurationError("DATABASE_URL: database is not migrated; run `token-refresh migrate`")
        await refuse_platforms_without_credentials(settings, database)
    finally:
        await database.dispose()


def _check_broker(bootstrap_servers: str, timeout: float = 5.0) -> None:
    errors = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{server.strip()} ({exc})")
    _fail(f"KAFKA_BOOTSTRAP_SERVERS: cannot reach any broker: {', '.join(errors)}", EXIT_CONFIGURATION)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8099, show_default=True, type=int)
@click.option(
    "--quiet", is_flag=True, help="No access-log line per request (it costs the sandbox CPU under a benchmark's load)."
)
def sandbox(host: str, port: int, quiet: bool) -> None:
    """Run the OAuth provider sandbox (a test double of the providers' token endpoints)."""
    from stream_app.sandbox import serve

    _configure_logging("INFO")
    try:
        asyncio.run(
            serve(host, port, access_log=not quiet, ready=lambda url: click.echo(f"sandbox listening on {url}"))
        )
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("user_id")
@click.argument("platform")
def refresh(user_id: str, platform: str) -> None:
    """Refresh one connection now (manual), whatever its expiry."""
    from stream_app.service import TokenService

    settings = _settings()
    _configure_logging(settings.log_level)

    async def run() -> Any:
        service = TokenService(settings)
        try:
            return await service.engine.refresh(_uuid(user_id), platform, trigger="manual")
        finally:
            await service.aclose()

    result = _run(run)
    click.echo(f"{result.outcome}: {result.reason}")
    if result.outcome != "refreshed":
        sys.exit(EXIT_FAILURE)


@cli.command()
@click.argument("user_id")
@click.argument("platform")
@click.option(
    "--reason",
    type=click.Choice(["operator", "user_request", "account_deleted", "security"]),
    default="operator",
    show_default=True,
)
def disconnect(user_id: str, platform: str, reason: str) -> None:
    """Disconnect a connection: publish a `connection.disconnected` for a worker to apply (status
    disconnected, no more refreshes, tokens revoked at the provider where supported, then wiped)."""
    from stream_app.disconnect import publish_disconnect

    settings = _settings()
    event = _run(lambda: publish_disconnect(settings, _uuid(user_id), platform, reason=reason))
    click.echo(f"published {event.event_type} {event.event_id}; a worker applies it (see token.revoked)")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        _fail(f"USER_ID: not a UUID: {value!r}", EXIT_CONFIGURATION)


@cli.command()
@click.argument("topic")
@click.option("--since", required=True, help="RFC 3339 time or 'beginning'.")
@click.option("--until", help="RFC 3339 time: the last record timestamp of the range (default: the end now).")
@click.option("--platform", help="Only the events of this platform.")
@click.option("--user", help="Only the events of this user: a UUID, or the 8-hex hash that stands for it in logs.")
@click.option("--follow", is_flag=True, help="After the range, print new records until Ctrl-C or SIGTERM.")
@click.option("--format", "output", type=click.Choice(["jsonl", "table"]), default="jsonl", show_default=True)
def replay(
    topic: str, since: str, until: str | None, platform: str | None, user: str | None, follow: bool, output: str
) -> None:
    """Print a topic's records over a time range (for audits): position, timestamp, key and the
    event. Values that are not valid events, and dead letters, only in redacted form."""
    from stream_app.privacy import UserIdHasher
    from stream_app.replay import ReplayRange, replay_topic, stop_on_signals
    from stream_app.replay_output import JsonLines, Tables
    from stream_app.replay_view import RecordFilter

    settings = _settings()
    if follow and until is not None:
        _fail("--follow reads on until interrupted, --until ends the range: give one of them", EXIT_CONFIGURATION)
    span = ReplayRange(
        None if since == "beginning" else _moment("--since", since),
        None if until is None else _moment("--until", until),
        follow,
    )
    try:
        keep = RecordFilter(platform, user, UserIdHasher(settings.log_hash_secret()))
    except ValueError as exc:
        _fail(str(exc), EXIT_CONFIGURATION)
    emit = JsonLines(click.echo) if output == "jsonl" else Tables(sys.stdout, each_batch=follow)

    async def run() -> int:
        return await replay_topic(settings, topic, span, keep, emit, stop_on_signals() if follow else None)

    try:
        count = _run(run)
    finally:
        emit.close()
    click.echo(f"{count} record(s)", err=True)


def _moment(option: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{option}: not an RFC 3339 time: {value!r}", EXIT_CONFIGURATION)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command()
@click.argument("user_id")
@click.argument("platform")
@click.option(
    "--tokens-from",
    type=click.Choice(["stdin", "prompt", "env"]),
    help="stdin: access token on line 1, refresh token on line 2; prompt: asked without echo; env: "
    "CONNECT_ACCESS_TOKEN and CONNECT_REFRESH_TOKEN.  [default: prompt at a terminal, else stdin]",
)
@click.option("--no-refresh-token", is_flag=True, help="The platform issued no refresh token.")
@click.option("--expires-in", type=click.IntRange(min=1), help="Seconds the access token is valid from now.")
@click.option("--scope", "scopes", multiple=True, help="A granted scope (repeat for several).")
@click.option("--signing-key-id", help="The PRODUCER_SIGNING_KEYS key to sign with (default: the first, if any).")
def connect(
    user_id: str,
    platform: str,
    tokens_from: str | None,
    no_refresh_token: bool,
    expires_in: int | None,
    scopes: tuple[str, ...],
    signing_key_id: str | None,
) -> None:
    """Publish a connection.created for a user, its tokens sealed (never give a token as an argument)."""
    from stream_app.connect_cli import publish_connection, read_tokens, sealed_event, signing_key

    settings = _settings()
    user = _uuid(user_id)
    source = tokens_from or ("prompt" if sys.stdin.isatty() else "stdin")
    try:
        signing = signing_key(settings, signing_key_id)
        tokens = read_tokens(
            source,
            sys.stdin,
            lambda what: str(click.prompt(what, hide_input=True, err=True)),
            with_refresh=not no_refresh_token,
        )
        event = sealed_event(settings, user, platform, tokens, expires_in=expires_in, scopes=list(scopes) or None)
    except ConfigurationError as exc:
        _fail(str(exc), EXIT_CONFIGURATION)
    published = _run(lambda: publish_connection(settings, event, signing))
    click.echo(
        f"published connection.created {event.event_id} for {event.key} at "
        f"{published.topic}[{published.partition}]@{published.offset}, "
        + (f"signed with key id {published.signed_with}" if published.signed_with else "unsigned")
    )


@cli.command("bulk-refresh")
@click.option("--platform", help="Only this platform's connections (default: every refreshable platform).")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["connected", "token_expired", "error"]),
    help="Only connections in this status (repeatable; default: all three).",
)
@click.option("--expiring-within", help="Only tokens expiring within this long: 90s, 15m, 2h, 1d, PT1H.")
@click.option("--last-error-class", help="Only connections whose last failure had this class (e.g. invalid_client).")
@click.option("--dry-run", is_flag=True, help="Count what would be refreshed, by platform and status; refresh nothing.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True, max=1000),
    help="Refreshes per second, per platform (default: BULK_REFRESH_RATE_PER_PLATFORM).",
)
@click.option("--detach", is_flag=True, help="Print the job's id and return; a worker runs it.")
@click.option("--follow", "follow_id", metavar="JOB_ID", help="Follow an existing job instead of creating one.")
@click.option("--cancel", "cancel_id", metavar="JOB_ID", help="Cancel a job instead of creating one.")
def bulk_refresh(
    platform: str | None,
    statuses: tuple[str, ...],
    expiring_within: str | None,
    last_error_class: str | None,
    dry_run: bool,
    rate: float | None,
    detach: bool,
    follow_id: str | None,
    cancel_id: str | None,
) -> None:
    """Refresh every connection a selector matches, as a job a worker runs (progress bar; Ctrl-C
    asks whether to cancel the job or detach from it)."""
    from stream_app.bulk.command import BulkRefreshRequest, run_bulk_refresh

    settings = _settings()
    request = BulkRefreshRequest(
        platform, statuses, expiring_within, last_error_class, dry_run, rate, detach, follow_id, cancel_id
    )
    sys.exit(run_bulk_refresh(settings, request))


@cli.command()
@click.option(
    "--worker",
    "workers",
    multiple=True,
    metavar="URL",
    help="A worker's HTTP API whose circuits to show (repeatable); default: this host's HTTP_PORT.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
def status(workers: tuple[str, ...], as_json: bool) -> None:
    """Token health: the seed's monitoring queries, connections by status, outbox and dead
    letters, and the workers' circuits."""
    import json

    from rich.console import Console

    from stream_app.db import Database
    from stream_app.status_report import StatusReport, gather_status, render

    settings = _settings()
    urls = list(workers) or ([f"http://127.0.0.1:{settings.http_port}"] if settings.http_port else [])

    async def run() -> StatusReport:
        database = Database.from_settings(settings)
        try:
            return await gather_status(settings, database, urls)
        finally:
            await database.dispose()

    report = _run(run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        render(report, Console())


@cli.command("rotate-keys")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1))
def rotate_keys(batch_size: int) -> None:
    """Re-encrypt every stored token under the current ENCRYPTION_KEY (resumable; refreshes go on)."""
    from stream_app.crypto import TokenCipher
    from stream_app.db import Database
    from stream_app.rotation import RotationReport
    from stream_app.rotation import rotate_keys as rotate

    settings = _settings()
    _configure_logging("WARNING")
    cipher = TokenCipher.from_settings(settings)

    async def run() -> RotationReport:
        database = Database(settings.database_url.get_secret_value())
        try:
            with _ProgressBar("Re-encrypting connections") as bar:
                return await rotate(database, cipher, batch_size=batch_size, progress=bar.update)
        finally:
            await database.dispose()

    report = _run(run)
    click.echo(
        f"rotated {report.rotated}, changed meanwhile {report.changed_meanwhile}, "
        f"unreadable {report.unreadable}; {report.remaining} still need a retired key"
        + "".join(f"; {n} under key id {kid}, not configured here" for kid, n in sorted(report.unknown_keys.items()))
        + f"; {report.seed_format} in the seed format (unbound)"
    )
    if report.remaining:
        sys.exit(EXIT_FAILURE)


@cli.group()
def dlq() -> None:
    """Dead-letter topics."""


@dlq.command("replay")
@click.argument("topic")
@click.option("--dry-run", is_flag=True, help="List what would be replayed; send and commit nothing.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N dead-letter records.")
@click.option(
    "--legacy",
    is_flag=True,
    help="Also replay the values that dead letters of earlier versions keep in base64: nothing proves where "
    "they came from (anyone who can write the topic could have written them).",
)
def dlq_replay(topic: str, dry_run: bool, limit: int | None, legacy: bool) -> None:
    """Send a dead-letter topic's records back to their topic after a fix (resumes where the
    last run stopped; run one at a time)."""
    from stream_app.dlq_replay import LEGACY_REFUSED, ReplayReport, replay_dead_letters
    from stream_app.redacted_view import printable

    settings = _settings()
    _configure_logging(settings.log_level)

    async def run() -> ReplayReport:
        with _ProgressBar(f"Replaying {topic}") as bar:
            return await replay_dead_letters(
                settings, topic, dry_run=dry_run, limit=limit, progress=bar.update, legacy=legacy
            )

    report = _run(run)
    # What comes from a letter is made printable: a forged one must not drive the terminal.
    for entry in report.entries:
        click.echo(printable(f"{entry.topic}[{entry.partition}]@{entry.offset}") + f"\t{printable(entry.reason)}")
    click.echo(
        f"{'would replay' if dry_run else 'replayed'} {report.replayed} ({report.reread} read back from their "
        f"topic); not replayed {len(report.not_replayed)}; skipped {report.skipped_unreadable} unreadable, "
        f"{report.skipped_foreign} foreign",
        err=True,
    )
    for reason, count in report.by_reason.most_common():
        click.echo(f"  {count}\t{printable(reason)}", err=True)
    if refused := sum(1 for entry in report.not_replayed if entry.why == LEGACY_REFUSED):
        click.echo(f"  {refused} of an earlier version not replayed: {LEGACY_REFUSED}", err=True)
    # Each record not replayed was logged with its position and why (the record is gone from its topic).
    if not report.all_replayed:
        sys.exit(EXIT_FAILURE)


@dlq.command("show")
@click.argument("topic")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N dead-letter records.")
def dlq_show(topic: str, limit: int | None) -> None:
    """Print a dead-letter topic's records: position, time, key, reason and a redacted view of
    the value (opened with the configured keys; the value itself is never printed)."""
    from stream_app.cli_kafka import kafka_failures_as_one_line
    from stream_app.dlq_show import show_dead_letters

    settings = _settings()
    _configure_logging(settings.log_level)

    async def run() -> None:
        async with kafka_failures_as_one_line(settings, f"reading {topic!r}"):
            async for line in show_dead_letters(settings, topic, limit):
                click.echo(line)

    _run(run)


class _ProgressBar:
    """A progress bar on stderr for a job that reports (done, total)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: Any = None

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = click.progressbar(length=max(total, 1), label=self._label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._bar.pos)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def main() -> None:
    cli(prog_name="token-refresh")
