"""``jobrunner metrics``, ``jobrunner jobs list|show|cancel|retry`` (and ``enqueue|watch`` from
``_follow``), ``jobrunner history clear``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from jobrunner._errors import InvalidArgumentError
from jobrunner._limits import (
    MAX_HISTORY_AGE_SECONDS,
    MAX_LIST_LIMIT,
    MAX_REASON_LENGTH,
    MAX_SEARCH_LENGTH,
    MIN_TIMESTAMP,
)
from jobrunner._models import JobInfo, JobStatus, Metrics, StepInfo
from jobrunner._runner import ALL_TENANTS, AllTenants
from jobrunner._validation import as_aware_datetime, as_history_age
from jobrunner.cli import _follow as follow
from jobrunner.cli._common import (
    add_database_options,
    count_option,
    format_time,
    print_json,
    print_table,
    run_with_runner,
    text_option,
    uuid_option,
)

_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``metrics``, ``jobs`` and ``history`` subcommands."""
    metrics = sub.add_parser("metrics", help="job counts, rates, throughput and queue age")
    _tenant_options(metrics, allow_all=True)
    _common(metrics)
    metrics.set_defaults(handler=_metrics)

    jobs = sub.add_parser("jobs", help="list, inspect, cancel and retry jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    listing = jobs_sub.add_parser("list", help="jobs newest first, with filters")
    _tenant_options(listing, allow_all=True)
    listing.add_argument(
        "--status",
        action="append",
        default=[],
        help="status to show (repeat or comma-separate): " + ", ".join(s.value for s in JobStatus),
    )
    listing.add_argument(
        "--name", type=text_option("--name", max_length=200), help="exact job name"
    )
    listing.add_argument(
        "--runner-type",
        type=text_option("--runner-type", max_length=50),
        help="postgres, temporal, ...",
    )
    listing.add_argument(
        "--since",
        "--created-after",
        dest="created_after",
        type=_when,
        help="created at or after: ISO time (UTC if no zone) or 30m, 2h, 7d",
    )
    listing.add_argument(
        "--until",
        "--created-before",
        dest="created_before",
        type=_when,
        help="created before: ISO time (UTC if no zone) or 30m, 2h, 7d ago",
    )
    listing.add_argument(
        "--search",
        type=text_option("--search", max_length=MAX_SEARCH_LENGTH),
        help="text in the name, id or error message",
    )
    listing.add_argument(
        "--limit",
        type=count_option("--limit", maximum=MAX_LIST_LIMIT),
        default=50,
        help=f"rows per page (1-{MAX_LIST_LIMIT})",
    )
    listing.add_argument(
        "--cursor",
        type=text_option("--cursor", max_length=200),
        help="continue after a previous page (printed at the end)",
    )
    _common(listing)
    listing.set_defaults(handler=_list)

    show = jobs_sub.add_parser("show", help="one job with its steps, error and data")
    show.add_argument("job_id", type=uuid_option("job id"))
    _tenant_options(show, allow_all=False)
    _common(show)
    show.set_defaults(handler=_show)

    cancel = jobs_sub.add_parser("cancel", help="cancel a live job (stops a running handler)")
    cancel.add_argument("job_id", type=uuid_option("job id"))
    cancel.add_argument(
        "--reason",
        type=text_option("--reason", max_length=MAX_REASON_LENGTH),
        help="recorded with the job",
    )
    _tenant_options(cancel, allow_all=False)
    _common(cancel)
    cancel.set_defaults(handler=_cancel)

    retry = jobs_sub.add_parser("retry", help="run a failed or cancelled job again")
    retry.add_argument("job_id", type=uuid_option("job id"))
    _tenant_options(retry, allow_all=False)
    _common(retry)
    retry.set_defaults(handler=_retry)

    follow.register(jobs_sub)

    history = sub.add_parser("history", help="job history maintenance")
    history_sub = history.add_subparsers(dest="history_command", required=True, metavar="ACTION")
    clear = history_sub.add_parser(
        "clear", help="delete finished jobs (never live jobs or active schedules)"
    )
    clear.add_argument(
        "--scope",
        choices=("finished", "all"),
        default="finished",
        help="finished: completed jobs only; all: completed, failed, cancelled",
    )
    clear.add_argument(
        "--older-than-days",
        type=_days,
        default=None,
        help=f"only jobs that finished at least this many days ago "
        f"(0 to {MAX_HISTORY_AGE_SECONDS / 86_400:.0f})",
    )
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _tenant_options(clear, allow_all=True)
    _common(clear)
    clear.set_defaults(handler=_clear)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_database_options(parser)


def _tenant_options(parser: argparse.ArgumentParser, *, allow_all: bool) -> None:
    if allow_all:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--tenant", type=uuid_option("tenant"), help="tenant UUID (default: the system tenant)"
        )
        group.add_argument(
            "--all-tenants", action="store_true", help="admin view across every tenant"
        )
    else:
        parser.add_argument(
            "--tenant", type=uuid_option("tenant"), help="tenant UUID (default: the system tenant)"
        )


def _tenant(args: argparse.Namespace) -> Any:
    if getattr(args, "all_tenants", False):
        return ALL_TENANTS
    return args.tenant


def _when(raw: str) -> datetime:
    """A time filter: ISO (UTC when no zone is given) or an age such as ``7d``, within the
    accepted timestamp range (``MIN_TIMESTAMP`` to ``MAX_TIMESTAMP``)."""
    match = _RELATIVE.match(raw.strip())
    try:
        if match:
            try:
                value = datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
            except OverflowError:
                raise InvalidArgumentError(
                    f"{raw.strip()!r:.40} ago is before {MIN_TIMESTAMP.date().isoformat()}"
                ) from None
        else:
            try:
                value = datetime.fromisoformat(raw)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected an ISO time or a relative age like 30m, 2h, 7d; got {raw!r:.80}"
                ) from None
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
        return as_aware_datetime(value, "value")
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _days(raw: str) -> float:
    """``--older-than-days``: a number of days from 0 to the history age bound."""
    try:
        days = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {raw!r:.80}") from None
    try:
        as_history_age(days * 86_400, "--older-than-days")
    except InvalidArgumentError:
        raise argparse.ArgumentTypeError(
            f"expected a number of days from 0 to {MAX_HISTORY_AGE_SECONDS / 86_400:.0f}"
        ) from None
    return days


def _duration(job: JobInfo) -> str:
    if job.started_at is None or job.completed_at is None:
        return "-"
    seconds = (job.completed_at - job.started_at).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def _status_text(status: JobStatus | str) -> str:
    value = status.value if isinstance(status, JobStatus) else status
    return "running" if value == "processing" else value


# -- metrics ------------------------------------------------------------------------------------
def _metrics(args: argparse.Namespace) -> int:
    metrics: Metrics = run_with_runner(args, lambda r: r.get_metrics(tenant=_tenant(args)))
    if args.json:
        print_json(metrics)
        return 0
    scope = (
        "all tenants"
        if isinstance(_tenant(args), AllTenants)
        else (f"tenant {args.tenant or '00000000-0000-0000-0000-000000000000'}")
    )
    print(f"Jobs ({scope})")
    order = [
        "processing",
        "queued",
        "pending",
        "waiting",
        "retrying",
        "completed",
        "failed",
        "cancelled",
        "active",
    ]
    rows: list[list[Any]] = [[_status_text(s), metrics.by_status.get(s, 0)] for s in order]
    rows.append(["total", metrics.total])
    print_table(["status", "jobs"], rows)
    print()
    rate = "-" if metrics.success_rate is None else f"{metrics.success_rate * 100:.1f}%"
    age = metrics.oldest_queued_age_seconds
    last_hour = sum(n for _, n in metrics.throughput_per_minute)
    print_table(
        ["figure", "value"],
        [
            ["failed, last 24 h", metrics.failed_last_24h],
            ["success rate", rate],
            ["completed, last hour", last_hour],
            ["completed, last minute", metrics.throughput_per_minute[-1][1]],
            ["oldest queued job", "-" if age is None else f"{age:.1f}s"],
        ],
    )
    print()
    print_table(
        ["runner type", "jobs"], [[k, v] for k, v in metrics.by_runner_type.items()] or [["-", 0]]
    )
    flow = metrics.extra.get("flow")
    if isinstance(flow, dict):
        _print_flow(flow)
    return 0


def _print_flow(flow: dict[str, Any]) -> None:
    """Flow control (docs/fairness.md): state, each rule with its usage."""
    print()
    state = "on" if flow.get("enabled") else "off"
    fair = "fair claiming" if flow.get("fair") else "plain claiming"
    print(f"Flow control: {state} ({fair})")
    rules = flow.get("rules") or []
    if not rules:
        return
    print_table(
        ["tenant", "job name", "running / limit", "rate used", "paused", "weight"],
        [
            [
                r.get("tenant") or "*",
                r.get("name") or "*",
                f"{r.get('running', 0)} / {r['max_running']}"
                if r.get("max_running") is not None
                else "-",
                f"{r.get('rate_used', 0)} / {r['rate_count']} per {r.get('rate_period')}s"
                if r.get("rate_count") is not None
                else "-",
                "yes" if r.get("paused") else "no",
                "-" if r.get("weight") is None else r["weight"],
            ]
            for r in rules
        ],
    )


# -- jobs -----------------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    statuses = [s.strip() for item in args.status for s in item.split(",") if s.strip()]
    page = run_with_runner(
        args,
        lambda r: r.list_jobs(
            tenant=_tenant(args),
            status=statuses or None,
            name=args.name,
            runner_type=args.runner_type,
            created_after=args.created_after,
            created_before=args.created_before,
            search=args.search,
            limit=args.limit,
            cursor=args.cursor,
        ),
    )
    if args.json:
        print_json({"jobs": page.jobs, "next_cursor": page.next_cursor})
        return 0
    show_tenant = isinstance(_tenant(args), AllTenants)
    headers = [
        "id",
        "name",
        "status",
        "runner",
        "attempts",
        "created",
        "started",
        "ended",
        "duration",
        "error",
    ]
    if show_tenant:
        headers.insert(1, "tenant")
    rows = []
    for job in page.jobs:
        row: list[Any] = [
            str(job.job_id),
            job.name,
            _status_text(job.status),
            job.runner_type,
            f"{job.attempts}/{job.max_attempts}",
            format_time(job.created_at),
            format_time(job.started_at),
            format_time(job.completed_at),
            _duration(job),
            "" if job.error is None else _one_line(job.error.message, 60),
        ]
        if show_tenant:
            row.insert(1, str(job.tenant))
        rows.append(row)
    if rows:
        print_table(headers, rows)
    else:
        print("no jobs match")
    if page.next_cursor:
        print(f"\nmore: --cursor {page.next_cursor}")
    return 0


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _stored_result(step: StepInfo) -> str:
    """A durable step's stored result on one line (``--json`` has it whole); ``-`` else."""
    if not step.durable or step.status is not JobStatus.COMPLETED:
        return "-"
    return _one_line(json.dumps(step.result, ensure_ascii=False, default=str), 60)


def _show(args: argparse.Namespace) -> int:
    details = run_with_runner(args, lambda r: r.get_job_details(args.job_id, tenant=args.tenant))
    if details is None:
        print(f"error: no job {args.job_id} for this tenant", file=sys.stderr)
        return 1
    if args.json:
        print_json(details)
        return 0
    job = details.job
    facts: list[list[Any]] = [
        ["job id", job.job_id],
        ["name", job.name],
        ["tenant", job.tenant],
        ["status", _status_text(job.status)],
        ["runner type", job.runner_type],
        [
            "progress",
            f"{job.progress}%" + (f" ({job.progress_message})" if job.progress_message else ""),
        ],
        ["attempts", f"{job.attempts} of {job.max_attempts}"],
        ["queue / priority", f"{job.queue} / {job.priority}"],
        ["created", format_time(job.created_at)],
        ["due", format_time(job.run_at)],
        ["started", format_time(job.started_at)],
        ["ended", format_time(job.completed_at)],
        ["duration", _duration(job)],
        ["external id", job.external_id or "-"],
        ["external run id", job.external_run_id or "-"],
    ]
    print_table(["field", "value"], facts)
    print("\nsteps")
    if details.steps:
        print_table(
            ["step", "status", "time", "attempt", "duration", "stored result"],
            [
                [
                    s.step_name + (" (durable)" if s.durable else ""),
                    _status_text(s.status),
                    format_time(s.processed_at),
                    s.retry_count,
                    f"{s.metadata['duration_ms']:.0f}ms"
                    if isinstance(s.metadata.get("duration_ms"), int | float)
                    else "-",
                    _stored_result(s),
                ]
                for s in details.steps
            ],
        )
    else:
        print("(none)")
    if details.parent_job_id is not None:
        print(f"\nparent: {details.parent_job_id}")
    for title, related in (
        ("dependencies", details.dependencies),
        ("dependents", details.dependents),
        ("children", details.children),
    ):
        if related:
            print(f"\n{title}")
            print_table(
                ["job id", "name", "status"],
                [[r.job_id, r.name, _status_text(r.status)] for r in related],
            )
    print("\ndata\n" + json.dumps(details.data, indent=2, default=str))
    print("\nmetadata\n" + json.dumps(job.metadata, indent=2, default=str))
    if job.result is not None:
        print("\nresult\n" + json.dumps(job.result, indent=2, default=str))
    if job.error is not None:
        print(f"\nerror: {job.error.type}: {job.error.message}")
        if job.error.traceback:
            print(job.error.traceback.rstrip())
    return 0


def _cancel(args: argparse.Namespace) -> int:
    done = run_with_runner(
        args,
        lambda r: r.cancel_job(
            args.job_id, tenant=args.tenant, reason=args.reason, cancelled_by="cli"
        ),
    )
    return _report(args, done, "cancelled", "not cancelled: no such live job for this tenant")


def _retry(args: argparse.Namespace) -> int:
    done = run_with_runner(args, lambda r: r.retry_job(args.job_id, tenant=args.tenant))
    return _report(
        args,
        done,
        "queued again",
        "not retried: no failed or cancelled job of this backend with that id for this tenant",
    )


def _report(args: argparse.Namespace, done: bool, ok: str, refused: str) -> int:
    if args.json:
        print_json({"job_id": args.job_id, "ok": done})
    elif done:
        print(f"{args.job_id}: {ok}")
    else:
        print(f"{args.job_id}: {refused}", file=sys.stderr)
    return 0 if done else 1


# -- history ------------------------------------------------------------------------------------
def _clear(args: argparse.Namespace) -> int:
    older = None
    if args.older_than_days is not None:
        if not args.older_than_days >= 0:
            raise InvalidArgumentError("--older-than-days must be zero or more")
        older = timedelta(days=args.older_than_days)
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "error: refusing to delete history without --yes (stdin is not a terminal)",
                file=sys.stderr,
            )
            return 2
        what = "completed" if args.scope == "finished" else "completed, failed and cancelled"
        age = "" if older is None else f" older than {args.older_than_days:g} days"
        answer = input(f"Delete {what} jobs{age}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    removed = run_with_runner(
        args,
        lambda r: r.clear_history(tenant=_tenant(args), scope=args.scope, older_than=older),
    )
    if args.json:
        print_json({"removed": removed})
    else:
        print(f"removed {removed} job{'' if removed == 1 else 's'}")
    return 0
