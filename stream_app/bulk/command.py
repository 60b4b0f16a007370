"""``token-refresh bulk-refresh``: create a bulk refresh job and follow it with a progress bar
(the worker runs it), follow or cancel an existing one."""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import DBAPIError

from stream_app.bulk.models import JobStatus
from stream_app.bulk.selector import BulkSelector
from stream_app.bulk.settings import BulkSettings
from stream_app.bulk.store import BulkJobs, BulkJobView
from stream_app.db import Database
from stream_app.errors import TokenRefreshError
from stream_app.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
POLL_SECONDS = 0.5
# A job still pending after this long is waiting for a worker: say so once.
NO_WORKER_HINT_SECONDS = 10.0


@dataclass(frozen=True)
class BulkRefreshRequest:
    platform: str | None = None
    statuses: tuple[str, ...] = ()
    expiring_within: str | None = None
    last_error_class: str | None = None
    dry_run: bool = False
    rate: float | None = None
    detach: bool = False
    follow: str | None = None
    cancel: str | None = None


class UsageError(Exception):
    """A bad option: one line, exit 2."""


def run_bulk_refresh(settings: Settings, request: BulkRefreshRequest) -> int:
    """The command's whole work; its exit code."""
    err = Console(stderr=True)
    try:
        with asyncio.Runner() as runner:
            database = Database(settings.database_url.get_secret_value())
            try:
                return _Command(runner, BulkJobs(database, BulkSettings.from_settings(settings)), err).run(request)
            finally:
                runner.run(database.dispose())
    except UsageError as exc:
        click.echo(f"token-refresh: {exc}", err=True)
        return EXIT_USAGE
    except (OSError, DBAPIError, TokenRefreshError) as exc:  # the database is away, or refused us
        click.echo(f"token-refresh: {_failure(exc)}", err=True)
        return EXIT_FAILURE


def _failure(exc: Exception) -> str:
    """One line about a failure, without a statement's text or parameters."""
    if isinstance(exc, DBAPIError):
        return f"database error: {type(exc.orig).__name__}"
    return str(exc) if isinstance(exc, TokenRefreshError) else f"{type(exc).__name__}: {exc}"


class _Command:
    def __init__(self, runner: asyncio.Runner, jobs: BulkJobs, err: Console) -> None:
        self._runner = runner
        self._jobs = jobs
        self._err = err

    def run(self, request: BulkRefreshRequest) -> int:
        if request.cancel is not None:
            view = self._call(self._jobs.cancel(_job_id(request.cancel, "--cancel")))
            if view is None:
                raise UsageError(f"--cancel: no bulk refresh job {request.cancel}")
            click.echo(f"cancel requested: job {view.id} is {view.status.value}")
            return EXIT_OK
        if request.follow is not None:
            return self._follow(_job_id(request.follow, "--follow"))
        selector = _selector(request)
        try:
            job_id = self._call(self._jobs.create(selector, request.dry_run, request.rate, created_by=_created_by()))
        except ValueError as exc:  # a rate out of bounds
            raise UsageError(f"--rate: {exc}") from None
        click.echo(f"bulk refresh job {job_id}")
        if request.detach:
            return EXIT_OK
        return self._follow(job_id)

    def _call(self, coroutine: Any) -> Any:
        return self._runner.run(coroutine)

    def _follow(self, job_id: uuid.UUID) -> int:
        try:
            view = self._watch(job_id)
        except KeyboardInterrupt:
            if not self._cancel_on_interrupt(job_id):
                click.echo(f"detached: job {job_id} goes on; follow it with --follow {job_id}", err=True)
                return EXIT_OK
            view = self._watch(job_id)
        for line in summary(view):
            click.echo(line)
        return EXIT_OK if view.status is JobStatus.SUCCEEDED else EXIT_FAILURE

    def _cancel_on_interrupt(self, job_id: uuid.UUID) -> bool:
        """Ctrl-C: cancel the job, or leave it running (detach); without a terminal, detach."""
        if not sys.stdin.isatty():
            return False
        choice = click.prompt(
            "\nCancel the job, or detach and leave it running?",
            type=click.Choice(["cancel", "detach"]),
            default="detach",
            err=True,
        )
        if choice != "cancel":
            return False
        self._call(self._jobs.cancel(job_id))
        return True

    def _watch(self, job_id: uuid.UUID) -> BulkJobView:
        """Poll the job until it is finished, drawing its progress on stderr."""
        started = time.monotonic()
        hinted = False
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
        )
        with Progress(*columns, console=self._err, transient=False) as bar:
            task = bar.add_task("pending", total=None, counts="")
            while True:
                view: BulkJobView | None = self._call(self._jobs.get(job_id))
                if view is None:
                    raise UsageError(f"no bulk refresh job {job_id}")
                bar.update(
                    task, description=view.status.value, total=view.total, completed=view.done, counts=_counts(view)
                )
                if view.finished:
                    return view
                if (
                    view.status is JobStatus.PENDING
                    and not hinted
                    and time.monotonic() - started > NO_WORKER_HINT_SECONDS
                ):
                    bar.console.print("waiting for a worker to take the job (is `token-refresh worker` running?)")
                    hinted = True
                time.sleep(POLL_SECONDS)


def summary(view: BulkJobView) -> list[str]:
    """What the command prints when the job is over."""
    lines = [f"job {view.id} {view.status.value}: {view.done} of {view.total or 0} handled"]
    if view.dry_run and view.matched:
        lines.append("would refresh (platform, status, connections):")
        for platform, by_status in sorted(view.matched.items()):
            lines.extend(f"  {platform}\t{status}\t{count}" for status, count in sorted(by_status.items()))
    lines.extend(f"  {outcome}\t{count}" for outcome, count in sorted(view.counts.items()))
    if view.last_error:
        lines.append(f"  last error: {view.last_error}")
    return lines


def _counts(view: BulkJobView) -> str:
    return " ".join(f"{outcome}={count}" for outcome, count in sorted(view.counts.items()))


def _selector(request: BulkRefreshRequest) -> BulkSelector:
    fields: dict[str, Any] = {
        "platform": request.platform,
        "expiring_within": request.expiring_within,
        "last_error_class": request.last_error_class,
    }
    if request.statuses:
        fields["statuses"] = list(request.statuses)
    try:
        return BulkSelector(**fields)
    except ValidationError as exc:
        raise UsageError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One clause per problem, named after the command's option, never echoing the value."""
    options = {"statuses": "--status"}
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        option = options.get(name, "--" + name.replace("_", "-"))
        problems.append(f"{option}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def _job_id(value: str, option: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UsageError(f"{option}: not a job id (a UUID)") from None


def _created_by(user: Callable[[], str] = getpass.getuser) -> str:
    try:
        login = user()
    except Exception:  # no login name in this environment (a container without one)
        login = "unknown"
    return f"cli:{login}@{socket.gethostname()}"
