"""``jobrunner jobs enqueue`` and ``jobrunner jobs watch``: act on jobs, and follow one live.

``watch`` redraws a live view on a terminal (rich: a status table, a progress bar with the
progress message, the step rows as they appear) and prints one line per change otherwise
(a pipe, a CI log). It is woken at once when the job finishes (``wait_for_job``'s database
notification) and re-reads progress and steps every :data:`REFRESH_SECONDS` meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from jobrunner._errors import InvalidArgumentError, JobTimeoutError
from jobrunner._models import JobDetails, JobStatus
from jobrunner._validation import as_aware_datetime, as_data, as_job_name, as_queue
from jobrunner.cli._common import (
    add_database_options,
    checked,
    format_time,
    print_json,
    run_with_runner,
    uuid_option,
)

#: Seconds between two looks at a running job's progress and steps.
REFRESH_SECONDS = 0.5


def register(jobs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``jobs enqueue`` and ``jobs watch`` to the ``jobs`` subcommands."""
    enqueue = jobs_sub.add_parser("enqueue", help="enqueue a job; prints its id")
    enqueue.add_argument(
        "name", metavar="NAME", type=checked(as_job_name, "job name"), help="the job's name"
    )
    enqueue.add_argument(
        "--data",
        type=checked(_json_object, "--data"),
        default=None,
        help="the job's data, a JSON object (default {}); e.g. '{\"order\": 42}'",
    )
    enqueue.add_argument(
        "--tenant", type=uuid_option("tenant"), help="tenant UUID (default: the system tenant)"
    )
    enqueue.add_argument(
        "--at",
        type=checked(_moment, "--at"),
        default=None,
        help="run at this ISO 8601 time (UTC when no zone is given; default now)",
    )
    enqueue.add_argument(
        "--queue", type=checked(as_queue, "--queue"), help="queue (default: the handler's)"
    )
    enqueue.add_argument("--json", action="store_true", help="machine-readable output")
    add_database_options(enqueue)
    enqueue.set_defaults(handler=_enqueue)

    watch = jobs_sub.add_parser(
        "watch", help="follow a job live until it ends (exit 0 completed, 1 failed/cancelled)"
    )
    watch.add_argument("job_id", type=uuid_option("job id"))
    watch.add_argument(
        "--tenant", type=uuid_option("tenant"), help="tenant UUID (default: the system tenant)"
    )
    add_database_options(watch)
    watch.set_defaults(handler=_watch)


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--data is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError("--data must be a JSON object, e.g. '{\"order\": 42}'")
    return as_data(value)


def _moment(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidArgumentError(
            f"--at must be an ISO 8601 time such as 2030-01-31T09:00:00Z, got {raw!r:.80}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return as_aware_datetime(value, "--at")


# -- enqueue -------------------------------------------------------------------------------------
def _enqueue(args: argparse.Namespace) -> int:
    async def work(runner: Any) -> Any:
        options: dict[str, Any] = {"tenant": args.tenant, "queue": args.queue}
        if args.at is None:
            return await runner.schedule_job(args.name, args.data, **options)
        return await runner.schedule_job_at(args.name, args.data, args.at, **options)

    # This process imports no handlers: the name is not checked against a registry, and the
    # first worker that claims the job pins its handler's policy (docs/concepts.md).
    handle = run_with_runner(args, work, require_registered=False)
    if args.json:
        print_json(
            {
                "job_id": str(handle.job_id),
                "tenant": str(handle.tenant),
                "external_id": handle.external_id,
                "created": handle.created,
            }
        )
    else:
        print(handle.job_id)
    return 0


# -- watch ---------------------------------------------------------------------------------------
def _watch(args: argparse.Namespace) -> int:
    console = Console()
    return int(run_with_runner(args, lambda runner: _follow(runner, args, console)))


async def _follow(runner: Any, args: argparse.Namespace, console: Console) -> int:
    details = await runner.get_job_details(args.job_id, tenant=args.tenant)
    if details is None:
        print(f"error: no job {args.job_id} for this tenant", file=sys.stderr)
        return 1
    lines = _LinePrinter(console) if not console.is_terminal else None
    live = (
        Live(_view(details), console=console, refresh_per_second=8, transient=False)
        if lines is None
        else None
    )
    try:
        if live is not None:
            live.start()
        while True:
            if lines is not None:
                lines.show(details)
            else:
                assert live is not None
                live.update(_view(details))
            if details.job.status.is_final:
                break
            with contextlib.suppress(JobTimeoutError):
                await runner.wait_for_job(args.job_id, tenant=args.tenant, timeout=REFRESH_SECONDS)
            found = await runner.get_job_details(args.job_id, tenant=args.tenant)
            if found is None:  # cleared from the history meanwhile
                print(f"error: job {args.job_id} was removed", file=sys.stderr)
                return 1
            details = found
    finally:
        if live is not None:
            live.stop()
    job = details.job
    if job.status is JobStatus.COMPLETED:
        if job.result is not None:
            console.print("result: " + json.dumps(job.result, default=str), markup=False)
        return 0
    if job.error is not None:
        console.print(f"error: {job.error.type}: {job.error.message}", markup=False)
    return 1


def _status(details: JobDetails) -> str:
    value = details.job.status.value
    return "running" if value == "processing" else value


def _steps(details: JobDetails) -> list[Any]:
    return [s for s in details.steps if s.step_name != "attempt"]


def _view(details: JobDetails) -> Group:
    job = details.job
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("job", Text(f"{job.job_id} ({job.name})"))
    facts.add_row("status", Text(_status(details)))
    facts.add_row("attempt", Text(f"{job.attempts} of {job.max_attempts}"))
    facts.add_row("started", Text(format_time(job.started_at)))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=100, completed=job.progress, width=40),
        Text(f"{job.progress:3d}%"),
        Text(job.progress_message or ""),
    )
    steps = Table(title="steps", title_justify="left", expand=False)
    for column in ("step", "status", "attempt", "time"):
        steps.add_column(column)
    for step in _steps(details):
        steps.add_row(
            Text(step.step_name),
            Text("running" if step.status is JobStatus.PROCESSING else step.status.value),
            Text(str(step.retry_count)),
            Text(format_time(step.processed_at)),
        )
    parts: list[Any] = [facts, bar]
    if steps.row_count:
        parts.append(steps)
    return Group(*parts)


class _LinePrinter:
    """One line per change, for output that is not a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.state: tuple[Any, ...] | None = None
        self.progress: tuple[int, str | None] | None = None
        self.steps: dict[Any, str] = {}

    def show(self, details: JobDetails) -> None:
        job = details.job
        state = (job.status, job.attempts)
        if state != self.state:
            self.state = state
            self._line(f"status {_status(details)}, attempt {job.attempts} of {job.max_attempts}")
        progress = (job.progress, job.progress_message)
        if progress != self.progress and (job.progress or job.progress_message):
            self.progress = progress
            message = f" {job.progress_message}" if job.progress_message else ""
            self._line(f"progress {job.progress}%{message}")
        for step in _steps(details):
            status = "running" if step.status is JobStatus.PROCESSING else step.status.value
            if self.steps.get(step.detail_id) != status:
                self.steps[step.detail_id] = status
                self._line(f"step {step.step_name} {status} (attempt {step.retry_count})")

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
