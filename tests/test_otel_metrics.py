"""OpenTelemetry metrics (issue 16): with the SDK's MeterProvider configured, jobrunner's
instruments report the attempts and enqueues of the process. Run in a subprocess: this test
process keeps OpenTelemetry unconfigured for every other test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    from jobrunner import JobHandlerRegistry, RetryPolicy
    from jobrunner.testing import InMemoryJobRunner, adrain

    async def main():
        registry = JobHandlerRegistry()

        async def ok(ctx, data):
            return 1

        async def bad(ctx, data):
            raise ValueError("no")

        registry.add("ok", ok)
        registry.add("bad", bad, retry=RetryPolicy(max_attempts=2, initial_interval=0.01))
        runner = InMemoryJobRunner(registry=registry)
        await runner.schedule_jobs("ok", [{}, {}, {}])
        await runner.schedule_job("bad", {})
        await adrain(runner, timeout=30)
        found = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = metric.name + " " + point.attributes["jobrunner.job.name"]
                        found[key] = getattr(point, "value", None) or getattr(point, "count", None)
        print(json.dumps(found))

    asyncio.run(main())
    """
)


def test_instruments_report_to_the_applications_meter_provider() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["jobrunner.jobs.enqueued ok"] == 3
    assert found["jobrunner.jobs.enqueued bad"] == 1
    assert found["jobrunner.jobs.completed ok"] == 3
    assert found["jobrunner.jobs.retried bad"] == 1
    assert found["jobrunner.jobs.failed bad"] == 1
    assert found["jobrunner.job.duration ok"] == 3  # a histogram: its count
    assert found["jobrunner.job.duration bad"] == 2
    assert found["jobrunner.job.queue_wait ok"] == 3


BATCH_SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[first, second]))

    from jobrunner import JobHandlerRegistry, _telemetry
    from jobrunner.testing import InMemoryJobRunner, adrain

    def histograms(reader):
        found = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name.startswith("jobrunner.job."):
                        for point in metric.data.data_points:
                            found[metric.name] = [point.count, point.sum]
        return found

    async def main():
        registry = JobHandlerRegistry()

        async def ok(ctx, data):
            return 1

        registry.add("ok", ok)
        runner = InMemoryJobRunner(registry=registry)
        out = {}
        for n in (300, 7):  # past a batch and then a remainder, read by each reader in turn
            await runner.schedule_jobs("ok", [{} for _ in range(n)])
            await adrain(runner, timeout=60)
            out[n] = [histograms(first), histograms(second)]
        tallies = _telemetry.snapshot().histograms
        out["tallies"] = {
            "jobrunner.job." + kind: [table[key][2], table[key][1]]
            for kind, table in tallies.items()
            for key in table
        }
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def test_histograms_get_every_attempt_in_batches_and_at_each_collection() -> None:
    """The attempt timings reach the OpenTelemetry histograms in batches: every reader's
    collection sees every attempt finished before it, with the values jobrunner measured."""
    proc = subprocess.run(
        [sys.executable, "-c", BATCH_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    names = ["jobrunner.job.duration", "jobrunner.job.queue_wait"]
    for seen, total in ((out["300"], 300), (out["7"], 307)):
        for reader in seen:  # cumulative temporality: counts since the start
            assert sorted(reader) == names
            assert [reader[name][0] for name in names] == [total, total]
    for name in names:
        count, value_sum = out["tallies"][name]
        assert count == 307
        assert abs(out["7"][0][name][1] - value_sum) < 1e-9
        assert abs(out["7"][1][name][1] - value_sum) < 1e-9
