"""``jobrunner schedules list|pause|resume|cancel``: manage recurring schedules."""

from __future__ import annotations

import argparse
from typing import Any

from jobrunner._limits import MAX_REASON_LENGTH
from jobrunner._models import ScheduleInfo
from jobrunner._runner import JobRunner
from jobrunner._validation import as_tenant, as_uuid
from jobrunner.cli._common import (
    add_database_options,
    format_time,
    print_json,
    print_table,
    run_with_runner,
    text_option,
    uuid_option,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schedules`` subcommand."""
    parser = sub.add_parser("schedules", help="list, pause, resume and cancel recurring jobs")
    actions = parser.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the tenant's schedules with next and last run")
    _common(listing)
    listing.set_defaults(handler=_list)

    for action, help_text in (
        ("pause", "stop firing a schedule until it is resumed"),
        ("resume", "fire a paused schedule again, from its next future tick"),
        ("cancel", "remove a schedule (its tracker row is marked cancelled)"),
    ):
        one = actions.add_parser(action, help=help_text)
        one.add_argument(
            "schedule_id",
            type=uuid_option("schedule id"),
            help="the schedule's id (its tracker job id)",
        )
        if action == "cancel":
            one.add_argument(
                "--reason",
                type=text_option("--reason", max_length=MAX_REASON_LENGTH),
                help="recorded on the tracker row",
            )
        _common(one)
        one.set_defaults(handler=_change, action=action)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tenant", type=uuid_option("tenant"), help="tenant UUID (default: the system tenant)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_database_options(parser)


def _list(args: argparse.Namespace) -> int:
    tenant = as_tenant(args.tenant)

    async def work(runner: JobRunner) -> list[ScheduleInfo]:
        return await runner.list_schedules(tenant=tenant)

    found = run_with_runner(args, work)
    if args.json:
        print_json(found)
        return 0
    if not found:
        print("no schedules")
        return 0
    print_table(
        [
            "id",
            "name",
            "expression",
            "timezone",
            "state",
            "next run (UTC)",
            "last run (UTC)",
            "last status",
        ],
        [
            [
                str(s.job_id),
                s.name,
                s.expression,
                s.timezone,
                "paused" if s.paused else "active",
                format_time(s.next_run_at),
                format_time(s.last_run_at),
                s.last_run_status.value if s.last_run_status else "-",
            ]
            for s in found
        ],
    )
    return 0


def _change(args: argparse.Namespace) -> int:
    tenant = as_tenant(args.tenant)
    schedule_id = as_uuid(args.schedule_id, "schedule_id")
    action: str = args.action

    async def work(runner: JobRunner) -> bool:
        if action == "pause":
            return await runner.pause_schedule(schedule_id, tenant=tenant)
        if action == "resume":
            return await runner.resume_schedule(schedule_id, tenant=tenant)
        listed = await runner.list_schedules(tenant=tenant)
        if not any(s.job_id == schedule_id for s in listed):
            return False  # cancel_job would also cancel a plain job: refuse anything else
        return await runner.cancel_job(
            schedule_id, tenant=tenant, reason=args.reason, cancelled_by="cli"
        )

    ok = run_with_runner(args, work)
    result: dict[str, Any] = {"schedule_id": str(schedule_id), "action": action, "ok": ok}
    if args.json:
        print_json(result)
    elif ok:
        print(f"{action}: {schedule_id}")
    else:
        print(f"no schedule {schedule_id} for tenant {tenant}")
    return 0 if ok else 1
