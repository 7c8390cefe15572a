"""The Prometheus metrics: what they are, how they are read, how they are written out.

Two sources, with bounded labels (job name, queue, status, runner type; the tenant only when
asked for):

* counters and histograms recorded in this process as attempts end and jobs are enqueued
  (:mod:`jobrunner._telemetry`); scrape the processes that run workers and enqueue;
* gauges of the live jobs per queue and status, read from the database by one statement over
  live rows only, cached briefly (:data:`DEFAULT_CACHE_SECONDS`), so every scraper of every
  process sees the same figures.

The dashboard's ``GET /metrics`` writes them in the Prometheus text format itself (no extra
package); :mod:`jobrunner.prometheus` hands the same families to ``prometheus_client``.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from jobrunner import _telemetry as telemetry
from jobrunner._db._monitoring import _with_tenant
from jobrunner._models import LIVE_STATUSES
from jobrunner._runner import AllTenants
from jobrunner._validation import as_tenant

__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "DepthRow",
    "Family",
    "depth_families",
    "metrics_text",
    "process_families",
    "queue_depth",
    "queue_depth_sync",
    "render_text",
]

#: Seconds the live-job gauges are reused before the database is asked again.
DEFAULT_CACHE_SECONDS = 5.0

_COUNTER_HELP = {
    "enqueued": "Jobs enqueued by this process",
    "completed": "Attempts run by this process that completed their job",
    "failed": "Attempts run by this process that failed their job for good",
    "retried": "Attempts run by this process that failed and will be retried",
    "cancelled": "Attempts run by this process stopped because their job was cancelled",
}
_HISTOGRAM_HELP = {
    "queue_wait": (
        "jobrunner_job_queue_wait_seconds",
        "Seconds from a job's due time to the start of its attempt (this process's attempts)",
    ),
    "duration": (
        "jobrunner_job_duration_seconds",
        "Seconds an attempt ran (this process's attempts)",
    ),
}


@dataclass
class Family:
    """One metric with its samples: ``(name suffix, labels, value)``."""

    name: str
    kind: str
    """``counter``, ``gauge`` or ``histogram``."""
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


@dataclass(frozen=True)
class DepthRow:
    """Live jobs of one queue, status and runner type (and tenant, when asked for)."""

    queue: str
    status: str
    runner_type: str
    tenant: uuid.UUID | None
    jobs: int
    oldest_due_seconds: float | None


# -- in-process counters and histograms ----------------------------------------------------------
def _label_dict(labels: telemetry.Labels) -> dict[str, str]:
    found = {"name": labels[0], "queue": labels[1], "runner_type": labels[2]}
    if labels[3]:
        found["tenant"] = labels[3]
    return found


def process_families(
    snapshot: telemetry.MetricsSnapshot | None = None, *, only_tenant: str | None = None
) -> list[Family]:
    """The counters and histograms recorded in this process (of one tenant's jobs only, when
    ``only_tenant`` is given: they must then carry the tenant label)."""
    snap = snapshot if snapshot is not None else telemetry.snapshot()
    if only_tenant is not None:
        snap = telemetry.MetricsSnapshot(
            counters={
                kind: {k: v for k, v in table.items() if k[3] == only_tenant}
                for kind, table in snap.counters.items()
            },
            histograms={
                kind: {k: v for k, v in table.items() if k[3] == only_tenant}
                for kind, table in snap.histograms.items()
            },
        )
    families = []
    for kind, help_text in _COUNTER_HELP.items():
        family = Family(f"jobrunner_jobs_{kind}", "counter", help_text)
        for labels, value in sorted(snap.counters.get(kind, {}).items()):
            family.samples.append(("_total", _label_dict(labels), float(value)))
        families.append(family)
    bounds = [*(f"{b:g}" for b in telemetry.DURATION_BUCKETS), "+Inf"]
    for kind, (name, help_text) in _HISTOGRAM_HELP.items():
        family = Family(name, "histogram", help_text)
        for labels, (buckets, total, count) in sorted(snap.histograms.get(kind, {}).items()):
            base = _label_dict(labels)
            running = 0
            for bound, in_bucket in zip(bounds, buckets, strict=True):
                running += in_bucket
                family.samples.append(("_bucket", {**base, "le": bound}, float(running)))
            family.samples.append(("_sum", base, total))
            family.samples.append(("_count", base, float(count)))
        families.append(family)
    return families


# -- live jobs from the database -----------------------------------------------------------------
class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[tuple[Any, ...], tuple[float, list[DepthRow]]] = {}

    def get(self, key: tuple[Any, ...], max_age: float) -> list[DepthRow] | None:
        with self.lock:
            found = self.entries.get(key)
        if found is None or time.monotonic() - found[0] > max_age:
            return None
        return found[1]

    def put(self, key: tuple[Any, ...], rows: list[DepthRow]) -> None:
        with self.lock:
            self.entries[key] = (time.monotonic(), rows)


_cache = _Cache()


def _scope(tenant: object) -> uuid.UUID | None:
    return None if isinstance(tenant, AllTenants) else as_tenant(tenant)


def _depth_query(db: Any, scope: uuid.UUID | None, by_tenant: bool) -> tuple[str, dict[str, Any]]:
    raw = (
        db.queries.monitoring_queue_depth_by_tenant
        if by_tenant
        else db.queries.monitoring_queue_depth
    )
    return _with_tenant(raw, scope), ({} if scope is None else {"tenant": scope})


def _rows(raw: Iterable[Any]) -> list[DepthRow]:
    return [
        DepthRow(
            queue=r["queue"],
            status=r["status"],
            runner_type=r["runner_type"],
            tenant=r["tenant"],
            jobs=int(r["jobs"]),
            oldest_due_seconds=r["oldest_due_seconds"],
        )
        for r in raw
    ]


def _memory_rows(runner: Any, scope: uuid.UUID | None, by_tenant: bool) -> list[DepthRow]:
    live = {s.value for s in LIVE_STATUSES}
    now = runner.clock.now()
    found: dict[tuple[str, str, uuid.UUID | None], list[float]] = {}
    for job in list(runner._jobs.values()):
        status = job.status.value
        if status not in live or (scope is not None and job.tenant != scope):
            continue
        key = (job.queue, status, job.tenant if by_tenant else None)
        entry = found.setdefault(key, [0, math.nan])
        entry[0] += 1
        if status != "processing" and job.run_at <= now:
            age = (now - job.run_at).total_seconds()
            entry[1] = age if math.isnan(entry[1]) else max(entry[1], age)
    return [
        DepthRow(
            queue, status, runner.runner_type, tenant, int(n), None if math.isnan(age) else age
        )
        for (queue, status, tenant), (n, age) in sorted(found.items(), key=str)
    ]


async def queue_depth(
    runner: Any,
    *,
    tenant: object,
    by_tenant: bool = False,
    cache_seconds: float = DEFAULT_CACHE_SECONDS,
) -> list[DepthRow]:
    """Live jobs per queue and status for ``tenant`` (``ALL_TENANTS``: every tenant), read
    through the runner's pool at most every ``cache_seconds``."""
    scope = _scope(tenant)
    db = getattr(runner, "db", None)
    if db is None:
        return _memory_rows(runner, scope, by_tenant)
    key = (id(db), db.schema, scope, by_tenant)
    cached = _cache.get(key, cache_seconds)
    if cached is not None:
        return cached
    ensure = getattr(runner, "_ensure_started", None)
    if ensure is not None:
        await ensure()
    query, params = _depth_query(db, scope, by_tenant)
    async with db.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        rows = _rows(await cur.fetchall())
    _cache.put(key, rows)
    return rows


def queue_depth_sync(
    runner: Any,
    *,
    tenant: object,
    by_tenant: bool = False,
    cache_seconds: float = DEFAULT_CACHE_SECONDS,
    timeout: float = 5.0,
) -> list[DepthRow]:
    """:func:`queue_depth` for synchronous callers (a Prometheus collector runs in the
    scraping thread): a short-lived connection of its own, never the runner's loop."""
    scope = _scope(tenant)
    db = getattr(runner, "db", None)
    if db is None:
        return _memory_rows(runner, scope, by_tenant)
    key = (id(db), db.schema, scope, by_tenant)
    cached = _cache.get(key, cache_seconds)
    if cached is not None:
        return cached
    query, params = _depth_query(db, scope, by_tenant)
    with psycopg.connect(
        db.conninfo,
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=max(math.ceil(timeout), 1),
        options=f"-c statement_timeout={int(timeout * 1000)}",
    ) as conn:
        rows = _rows(conn.execute(query.encode(), params).fetchall())
    _cache.put(key, rows)
    return rows


def depth_families(rows: list[DepthRow]) -> list[Family]:
    """The gauges of :func:`queue_depth`'s rows."""
    jobs = Family(
        "jobrunner_jobs",
        "gauge",
        "Live jobs (pending, queued, processing, retrying) per queue and status",
    )
    oldest = Family(
        "jobrunner_queue_oldest_due_seconds",
        "gauge",
        "Age of the oldest due job still waiting for a worker, per queue",
    )
    ages: dict[tuple[str, str, str], float] = {}
    for row in rows:
        labels = {"queue": row.queue, "status": row.status, "runner_type": row.runner_type}
        tenant = str(row.tenant) if row.tenant is not None else ""
        if tenant:
            labels["tenant"] = tenant
        jobs.samples.append(("", labels, float(row.jobs)))
        if row.oldest_due_seconds is not None:
            key = (row.queue, row.runner_type, tenant)
            ages[key] = max(ages.get(key, 0.0), max(float(row.oldest_due_seconds), 0.0))
    for (queue, runner_type, tenant), age in sorted(ages.items()):
        labels = {"queue": queue, "runner_type": runner_type}
        if tenant:
            labels["tenant"] = tenant
        oldest.samples.append(("", labels, age))
    return [jobs, oldest]


# -- the text format -----------------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if not float(value).is_integer() else f"{value:.1f}"


def render_text(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{suffix}{{{text}}} {_number(value)}")
    return "\n".join(lines) + "\n"


async def metrics_text(
    runner: Any, *, tenant: object, cache_seconds: float = DEFAULT_CACHE_SECONDS
) -> str:
    """Every jobrunner metric of this process and the database, as Prometheus text.

    A view of one tenant shows that tenant's live jobs, and this process's counters only when
    they carry the tenant label (they count every tenant's jobs otherwise).
    """
    by_tenant = telemetry.tenant_label_enabled()
    rows = await queue_depth(
        runner, tenant=tenant, by_tenant=by_tenant, cache_seconds=cache_seconds
    )
    families = depth_families(rows)
    if isinstance(tenant, AllTenants):
        families.extend(process_families())
    elif by_tenant:
        families.extend(process_families(only_tenant=str(_scope(tenant))))
    return render_text(families)
