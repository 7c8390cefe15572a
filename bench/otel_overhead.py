"""Observability overhead: jobrunner's per-attempt OpenTelemetry calls, and the drain with them.

Not run by CI; the figures are in docs/performance.md ("Observability overhead").

Usage (from the repository root)::

    python bench/otel_overhead.py micro              # per-call loop, each configuration
    python bench/otel_overhead.py drain --rounds 3   # bench/run.py's drain, configurations
                                                     # interleaved round by round

Configurations (``JOBRUNNER_BENCH_OTEL`` of bench/worker_proc.py): ``off`` (the OpenTelemetry
API installed, nothing configured), ``metrics`` (an SDK meter provider with a reader),
``sampled`` (metrics, and an SDK tracer provider sampling root traces at 10 %, parent-based)
and ``1`` (metrics, and every attempt traced). Spans go to a batching processor whose exporter
drops them: the cost of making them is what is measured, not of exporting them.

``micro`` runs, in a fresh process per configuration (the providers are process-global), the
calls jobrunner makes for one attempt (``_execution.run_attempt``): the attempt span made
current and ended, then ``record_attempt``; in rounds, configurations interleaved; it prints
the CPU microseconds per attempt of each part (the process's CPU time, the span processor's
thread included, so that other processes count less), best and median of the rounds.

``drain`` runs bench/run.py's drain (20,000 no-op jobs, one worker process, fresh database per
round) once per configuration per round, in rotating order, and prints the median jobs/s and
worker CPU per job of each configuration with its ratio to ``off``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIGS = ("off", "metrics", "sampled", "1")
LABELS = {
    "off": "off",
    "metrics": "metrics",
    "sampled": "metrics + tracing sampled 10 %",
    "1": "metrics + tracing always on",
}


# -- micro ---------------------------------------------------------------------------------------
def _micro_child(mode: str, n: int) -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    if mode != "off":
        from worker_proc import enable_observability

        enable_observability(mode)
    from jobrunner import _telemetry as telemetry

    job_ids = [uuid.uuid4() for _ in range(n)]

    def spans() -> float:
        start = time.process_time()
        for i in range(n):
            span = telemetry.attempt_span(
                name="bench.noop",
                job_id=job_ids[i],
                tenant="default",
                attempt=1,
                queue="default",
                runner_type="postgres",
                carrier=None,
            )
            with span.current():
                pass
            span.end("completed", None, {})
        return (time.process_time() - start) / n * 1e6

    def records() -> float:
        start = time.process_time()
        for _ in range(n):
            telemetry.record_attempt(
                "completed",
                name="bench.noop",
                queue="default",
                runner_type="postgres",
                tenant="default",
                duration=0.0004,
                queue_wait=0.8,
            )
        return (time.process_time() - start) / n * 1e6

    spans(), records()  # warm up
    return {"span": spans(), "record": records()}


def micro(rounds: int, n: int) -> None:
    samples: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    for r in range(rounds):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]
        for mode in order:
            out = subprocess.run(
                [sys.executable, __file__, "_micro_child", mode, str(n)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            samples[mode].append(json.loads(out.strip().splitlines()[-1]))
    print(f"micro: {n} attempts per sample, {rounds} samples; us per attempt, best (median)")
    print(f"{'configuration':<34} {'attempt span':>16} {'record_attempt':>16} {'total':>8}")
    for mode in CONFIGS:
        span = [s["span"] for s in samples[mode]]
        record = [s["record"] for s in samples[mode]]
        best = min(a + b for a, b in zip(span, record, strict=True))
        print(
            f"{LABELS[mode]:<34} {min(span):>6.1f} ({statistics.median(span):>6.1f})"
            f" {min(record):>6.1f} ({statistics.median(record):>6.1f}) {best:>8.1f}"
        )
        print(json.dumps({"micro": mode, "span_us": span, "record_us": record}))


# -- drain ---------------------------------------------------------------------------------------
async def drain(rounds: int, dsn: str, jobs: int, configs: tuple[str, ...]) -> None:
    sys.path.insert(0, str(HERE))
    import run as bench_run

    sizes = bench_run.FULL
    if jobs != sizes.drain:
        sizes = bench_run.Sizes(**{**bench_run.FULL.__dict__, "drain": jobs})
    bench = bench_run.Bench(dsn=dsn, sizes=sizes)
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    saved = os.environ.get("JOBRUNNER_BENCH_OTEL")
    try:
        for r in range(rounds):
            order = configs[r % len(configs) :] + configs[: r % len(configs)]
            for mode in order:
                if mode == "off":
                    os.environ.pop("JOBRUNNER_BENCH_OTEL", None)
                else:
                    os.environ["JOBRUNNER_BENCH_OTEL"] = mode  # the worker child inherits it
                with bench_run.fresh_database(bench, "otel") as db:
                    await bench_run._prepare_drain(db, jobs)
                    res = await bench_run.run_drain(bench, db, jobs, 1, bench_run.RECOMMENDED)
                bench_run._check_drain(res, jobs)
                results[mode].append(res)
                print(
                    json.dumps(
                        {
                            "round": r,
                            "config": mode,
                            "jobs_per_s": round(res["jobs_per_s"], 1),
                            "worker_cpu_us": round(res["worker_cpu_s"] / jobs * 1e6, 1),
                        }
                    ),
                    flush=True,
                )
    finally:
        if saved is None:
            os.environ.pop("JOBRUNNER_BENCH_OTEL", None)
        else:
            os.environ["JOBRUNNER_BENCH_OTEL"] = saved
    base = statistics.median(r["jobs_per_s"] for r in results["off"]) if "off" in results else None
    print(f"drain: {jobs} jobs, {rounds} rounds, configurations interleaved; medians")
    print(f"{'configuration':<34} {'jobs/s':>8} {'vs off':>8} {'worker CPU/job':>15}  samples")
    for mode in configs:
        rate = statistics.median(r["jobs_per_s"] for r in results[mode])
        cpu = statistics.median(r["worker_cpu_s"] for r in results[mode]) / jobs * 1e6
        ratio = f"{(rate / base - 1) * 100:+.1f} %" if base else "-"
        samples = ", ".join(f"{r['jobs_per_s']:.0f}" for r in results[mode])
        print(f"{LABELS[mode]:<34} {rate:>8.0f} {ratio:>8} {cpu:>12.0f} us  {samples}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_micro_child":
        print(json.dumps(_micro_child(sys.argv[2], int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["micro", "drain"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=10_000, help="micro: attempts per sample")
    parser.add_argument("--jobs", type=int, default=20_000, help="drain: jobs per round")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated subset of " + str(CONFIGS)
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "JOBRUNNER_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    configs = tuple(c for c in args.configs.split(",") if c)
    if args.what == "micro":
        micro(args.rounds, args.n)
    else:
        asyncio.run(drain(args.rounds, args.dsn, args.jobs, configs))


if __name__ == "__main__":
    main()
