"""``python -m chaos [--full] [SCENARIO ...]``: run fault scenarios, print one JSON report each.

Exit status 1 when any scenario lost a job, left one unfinished, accepted a fenced-off
completion, ran a job again where no fault explains it, or was skipped (a skip passes only with
``--allow-skip``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from chaos.scenarios import SCENARIOS, default_dsn, problems


def _out_of_time(signum: int, frame: Any) -> None:
    raise SystemExit("chaos: time limit reached")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        choices=[*SCENARIOS, []],
        metavar="SCENARIO",
        help=f"default: all ({', '.join(SCENARIOS)})",
    )
    parser.add_argument("--full", action="store_true", help="the issue's numbers (5,000 jobs...)")
    parser.add_argument(
        "--dsn", default=None, help="database (default: JOBRUNNER_TEST_DSN or local)"
    )
    parser.add_argument(
        "--allow-skip",
        action="store_true",
        help="count a scenario that cannot run here (e.g. Temporal not installed) as passed",
    )
    parser.add_argument("--out", default=None, help="also write all reports to this JSON file")
    parser.add_argument(
        "--time-limit", type=int, default=0, help="abort (exit 2) after this many seconds"
    )
    args = parser.parse_args(argv)
    if args.time_limit:
        # Workers are children in their own scenario: the harness's finally blocks stop them.
        signal.signal(signal.SIGALRM, _out_of_time)
        signal.alarm(args.time_limit)
    dsn = args.dsn or default_dsn()
    reports = []
    bad = False
    started = time.monotonic()
    for name in args.scenarios or list(SCENARIOS):
        report = SCENARIOS[name](dsn, full=args.full)
        reports.append(report)
        report["problems"] = problems(report, allow_skip=args.allow_skip)
        print(json.dumps(report, indent=2, default=str), flush=True)
        bad |= bool(report["problems"])
    summary = {
        "total_s": round(time.monotonic() - started, 1),
        "ok": not bad,
        "scenarios": {
            r["scenario"]: {
                k: r.get(k)
                for k in (
                    "lost",
                    "jobs_run_more_than_once",
                    "extra_runs",
                    "extra_runs_unexplained",
                    "fencing_violations",
                    "recovery_s",
                    "skipped",
                    "problems",
                )
                if k in r
            }
            for r in reports
        },
    }
    print(json.dumps({"summary": summary}, indent=2, default=str))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"reports": reports, "summary": summary}, fh, indent=2, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
