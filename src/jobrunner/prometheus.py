"""A Prometheus collector for applications that serve their own ``/metrics`` (the
``prometheus`` extra: ``prometheus-client``).

.. code-block:: python

    from prometheus_client import REGISTRY
    from jobrunner.prometheus import JobRunnerCollector

    REGISTRY.register(JobRunnerCollector(runner))

It yields the same metrics as the dashboard's ``GET /metrics`` (docs/reference/metrics.md):
this process's counters and histograms, and the live-job gauges read from the database (one
statement over live rows, cached for ``cache_seconds``) on a short-lived connection of its own,
so scraping never touches the runner's event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from jobrunner import _telemetry
from jobrunner._metrics import (
    DEFAULT_CACHE_SECONDS,
    Family,
    depth_families,
    process_families,
    queue_depth_sync,
)
from jobrunner._runner import ALL_TENANTS

__all__ = ["JobRunnerCollector"]

logger = logging.getLogger("jobrunner.prometheus")


class JobRunnerCollector(Collector):
    """jobrunner's metrics for a ``prometheus_client`` registry.

    Args:
        runner: The runner whose database holds the jobs (PostgreSQL or Temporal; an
            in-memory runner is read directly).
        tenant: ``ALL_TENANTS`` (default) for every tenant's live jobs, or one tenant.
        cache_seconds: How long the live-job figures are reused between scrapes.
        timeout: Seconds the database may take (connect and statement) before a scrape
            reports ``jobrunner_metrics_database_up 0`` instead of the gauges.
    """

    def __init__(
        self,
        runner: Any,
        *,
        tenant: object = ALL_TENANTS,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        timeout: float = 5.0,
    ) -> None:
        self.runner = runner
        self.tenant = tenant
        self.cache_seconds = cache_seconds
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not query the database."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families, read now (gauges from the cache when fresh)."""
        families: list[Family] = []
        up = 1.0
        try:
            rows = queue_depth_sync(
                self.runner,
                tenant=self.tenant,
                by_tenant=_telemetry.tenant_label_enabled(),
                cache_seconds=self.cache_seconds,
                timeout=self.timeout,
            )
            families.extend(depth_families(rows))
        except Exception as exc:  # noqa: BLE001 - a scrape reports, it never fails the app
            logger.warning("jobrunner metrics: reading live jobs failed: %s", exc)
            up = 0.0
        health = Family(
            "jobrunner_metrics_database_up",
            "gauge",
            "1 when the live-job gauges could be read from the database",
        )
        health.samples.append(("", {}, up))
        families.append(health)
        families.extend(process_families())
        for family in families:
            metric = Metric(family.name, family.help, family.kind)
            for suffix, labels, value in family.samples:
                metric.add_sample(family.name + suffix, labels, value)
            yield metric
