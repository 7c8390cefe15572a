"""Observability switches and helpers: JSON logs, and the tenant label of metrics.

Tracing needs no call here: with the ``otel`` extra installed, jobrunner's spans and metric
instruments go to the TracerProvider / MeterProvider the application configured
(docs/howto/observability.md).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from jobrunner import _telemetry
from jobrunner._metrics import DEFAULT_CACHE_SECONDS, metrics_text
from jobrunner._runner import ALL_TENANTS

__all__ = ["JsonFormatter", "prometheus_text", "set_tenant_label"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def set_tenant_label(enabled: bool) -> None:
    """Label jobrunner's metrics with the tenant too (off by default).

    Applies to this process's counters and histograms (recorded from now on, OpenTelemetry
    and Prometheus alike) and to the live-job gauges of the dashboard's ``/metrics`` and of
    :class:`jobrunner.prometheus.JobRunnerCollector`. Every tenant adds series: turn it on
    only with a bounded number of tenants.
    """
    _telemetry.set_tenant_label(enabled)


async def prometheus_text(
    runner: Any, *, tenant: object = ALL_TENANTS, cache_seconds: float = DEFAULT_CACHE_SECONDS
) -> str:
    """jobrunner's metrics in the Prometheus text format, as the dashboard's ``GET /metrics``
    serves them: this process's counters and histograms and the database's live-job gauges
    (docs/reference/metrics.md). For an async application's own ``/metrics`` route; needs no
    extra package.

    Args:
        runner: The runner whose database holds the jobs.
        tenant: ``ALL_TENANTS`` (default), or one tenant: its live jobs only, and the counters
            only when they carry the tenant label (:func:`set_tenant_label`).
        cache_seconds: How long the live-job figures are reused.
    """
    return await metrics_text(runner, tenant=tenant, cache_seconds=cache_seconds)


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, every ``extra`` field (jobrunner's attempt records carry ``job_id``,
    ``job_name``, ``tenant``, ``attempt``, ``outcome``, ...), and ``exception`` with the
    formatted traceback when there is one.

    ``jobrunner-worker --log-format json`` uses it; install it on any handler of your own.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
