"""Traces, metrics and attempt logs: what jobrunner reports about the jobs it runs.

OpenTelemetry is optional (the ``otel`` extra). Without ``opentelemetry-api`` installed every
hook here is a cheap no-op and nothing imports it; with it installed, spans and metric
instruments go to whatever TracerProvider / MeterProvider the application configured (the API
is a no-op until it does), so no jobrunner call is needed to turn tracing on.

The trace context of an enqueue travels with the job, in its metadata under
:data:`TRACE_CONTEXT_KEY` (W3C ``traceparent``/``tracestate`` as the application's propagator
writes them), so the span of each attempt continues the enqueuer's trace in whichever process
and host runs it, on every backend: the PostgreSQL worker reads it from the claimed row, the
Temporal activity from the job's row, the in-memory runner from its job.

Counters and histograms are also kept in process (:func:`snapshot`) for the Prometheus
collector (``jobrunner.prometheus``), which needs neither OpenTelemetry nor its SDK.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from jobrunner._models import ScheduledJob, bind_handle

if TYPE_CHECKING:
    from jobrunner._models import JobError

__all__ = [
    "DURATION_BUCKETS",
    "TRACE_CONTEXT_KEY",
    "MetricsSnapshot",
    "attach_trace_context",
    "enqueue_boundary",
    "enqueue_span",
    "record_attempt",
    "record_enqueued",
    "set_tenant_label",
    "snapshot",
    "step_span",
    "tenant_label_enabled",
]

#: Metadata key holding the enqueuer's trace context (reserved; the attempt consumes it).
TRACE_CONTEXT_KEY = "jobrunner.trace_context"

#: Histogram bucket bounds in seconds (queue wait and run time), Prometheus-style.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

_MESSAGING_SYSTEM = "jobrunner"


# -- OpenTelemetry, loaded on first use ----------------------------------------------------------
class _Otel:
    """The OpenTelemetry API objects jobrunner uses (only built when the API is installed)."""

    def __init__(self) -> None:
        from opentelemetry import context, metrics, propagate, trace

        version = self.version = _package_version()
        self.context = context
        self.propagate = propagate
        self.trace = trace
        # No TracerProvider configured (the API's proxy) or a no-op one: spans are no-ops.
        self.untraced = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self.tracer = trace.get_tracer("jobrunner", version)
        self._provider_tracer: tuple[Any, Any] | None = None
        # None when a provider is named in the environment (the API loads it on first use).
        self._global_unset: bool | None = (
            None if "OTEL_PYTHON_TRACER_PROVIDER" in os.environ else True
        )
        # The API's own classes for "no MeterProvider configured": the proxy drops measurements.
        internal: Any = getattr(metrics, "_internal", None)
        self._metrics_internal = internal
        proxy = getattr(internal, "_ProxyMeterProvider", None)
        self.unmetered: tuple[type, ...] = (
            (metrics.NoOpMeterProvider, proxy) if proxy else (metrics.NoOpMeterProvider,)
        )
        self._meter_env_unset = "OTEL_PYTHON_METER_PROVIDER" not in os.environ
        self.metrics = metrics
        meter = metrics.get_meter("jobrunner", version)
        # Counters are observable: the SDK reads the process's tallies when it collects, so
        # an attempt costs no metric call of the SDK for them (the hot path of a drain).
        self.counters = {
            kind: meter.create_observable_counter(
                f"jobrunner.jobs.{kind}",
                callbacks=[functools.partial(_observe_counter, metrics, kind)],
                unit="{job}",
                description=description,
            )
            for kind, description in _COUNTERS.items()
        }
        self.queue_wait = meter.create_histogram(
            "jobrunner.job.queue_wait",
            unit="s",
            description="Seconds from a job's due time to the start of its attempt",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "jobrunner.job.duration",
            unit="s",
            description="Seconds an attempt ran",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def active_tracer(self) -> Any:
        """The configured TracerProvider's tracer, or ``None`` when there is none (checked on
        every call: the application may configure one after jobrunner first reported).

        Without a provider the API's lookup reads the environment on every call (a few
        percent of a drain's CPU); the API's global, when it has one, tells the same for
        free, so it is read first (with the public lookup when it is absent or a provider
        is named in the environment).
        """
        if self._global_unset is not None and getattr(self.trace, "_TRACER_PROVIDER", 0) is None:
            return None
        provider = self.trace.get_tracer_provider()
        if isinstance(provider, self.untraced):
            return None
        cached = self._provider_tracer
        if cached is None or cached[0] is not provider:
            cached = self._provider_tracer = (
                provider,
                provider.get_tracer("jobrunner", self.version),
            )
        return cached[1]

    def metered(self) -> bool:
        """Whether a MeterProvider is configured (checked on every call, as for tracers).

        The global is read first, as :meth:`active_tracer` does: the public lookup reads the
        environment on every call while none is set.
        """
        if self._meter_env_unset and getattr(self._metrics_internal, "_METER_PROVIDER", 0) is None:
            return False
        return not isinstance(self.metrics.get_meter_provider(), self.unmetered)


_COUNTERS = {
    "enqueued": "Jobs enqueued (a singleton key that matched an existing job counts nothing)",
    "completed": "Attempts that completed their job",
    "failed": "Attempts that failed their job for good (no attempts left or not retryable)",
    "retried": "Failed attempts whose job runs again later",
    "cancelled": "Attempts stopped because their job was cancelled",
}

_UNLOADED: Any = object()
_otel_state: Any = _UNLOADED
_otel_lock = threading.Lock()


def _otel() -> _Otel | None:
    global _otel_state
    state = _otel_state
    if state is _UNLOADED:
        with _otel_lock:
            if _otel_state is _UNLOADED:
                try:
                    _otel_state = _Otel()
                except ImportError:
                    _otel_state = None
            state = _otel_state
    return state  # type: ignore[no-any-return]


def _package_version() -> str:
    from importlib import metadata

    for name in ("jobrunner-pg", "jobrunner"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return "0"


# -- in-process tallies (the Prometheus collector reads them) ------------------------------------
@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        # The first bound >= value (Prometheus' "le"); past the last one, the overflow bucket.
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value
        self.count += 1


Labels = tuple[str, str, str, str]
"""(job name, queue, runner type, tenant or ``""``)."""


@dataclass(frozen=True)
class MetricsSnapshot:
    """Counters and histograms recorded in this process since it started."""

    counters: dict[str, dict[Labels, int]]
    """Counter kind (``enqueued``, ``completed``, ...) to its value per label set."""
    histograms: dict[str, dict[Labels, tuple[list[int], float, int]]]
    """``queue_wait`` / ``duration`` to (per-bucket counts, sum, count) per label set; the
    last bucket is everything over the largest bound."""


class _Tallies:
    def __init__(self) -> None:
        # Sync runners run their loop in another thread than the application's runner.
        self.lock = threading.Lock()
        self.counters: dict[str, dict[Labels, int]] = {kind: {} for kind in _COUNTERS}
        self.histograms: dict[str, dict[Labels, _Histogram]] = {"queue_wait": {}, "duration": {}}
        # Attempt timings not yet recorded on the OpenTelemetry histograms (_flush_timings).
        self.pending: list[tuple[Labels, float, float | None]] = []

    def add(self, kind: str, labels: Labels, amount: int = 1) -> None:
        with self.lock:
            table = self.counters[kind]
            table[labels] = table.get(labels, 0) + amount

    def observe(self, kind: str, labels: Labels, value: float) -> None:
        with self.lock:
            table = self.histograms[kind]
            found = table.get(labels)
            if found is None:
                found = table[labels] = _Histogram()
            found.observe(value)

    def attempt(
        self,
        kind: str | None,
        labels: Labels,
        duration: float,
        queue_wait: float | None,
        otel: bool,
    ) -> bool:
        """Count and observe one attempt; with ``otel``, also queue its timings for the
        OpenTelemetry histograms. Returns whether the queue is due for :func:`_flush_timings`."""
        with self.lock:
            if kind is not None:
                table = self.counters[kind]
                table[labels] = table.get(labels, 0) + 1
            for name, value in (("duration", duration), ("queue_wait", queue_wait)):
                if value is None:
                    continue
                histograms = self.histograms[name]
                found = histograms.get(labels)
                if found is None:
                    found = histograms[labels] = _Histogram()
                found.observe(value)
            if not otel:
                return False
            self.pending.append((labels, duration, queue_wait))
            return len(self.pending) >= _FLUSH_TIMINGS_AT

    def take_pending(self) -> list[tuple[Labels, float, float | None]]:
        with self.lock:
            pending, self.pending = self.pending, []
        return pending

    def snapshot(self) -> MetricsSnapshot:
        with self.lock:
            return MetricsSnapshot(
                counters={kind: dict(table) for kind, table in self.counters.items()},
                histograms={
                    kind: {k: (list(h.buckets), h.total, h.count) for k, h in table.items()}
                    for kind, table in self.histograms.items()
                },
            )


_tallies = _Tallies()
_tenant_label = False


def set_tenant_label(enabled: bool) -> None:
    """Label counters and histograms with the tenant too (off by default: one series per
    tenant can be a great many)."""
    global _tenant_label
    _tenant_label = bool(enabled)


def tenant_label_enabled() -> bool:
    """Whether metrics carry the tenant label (:func:`set_tenant_label`)."""
    return _tenant_label


def snapshot() -> MetricsSnapshot:
    """The counters and histograms recorded in this process."""
    return _tallies.snapshot()


def _labels(name: str, queue: str, runner_type: str, tenant: object) -> Labels:
    return (name, queue, runner_type, str(tenant) if _tenant_label else "")


_ATTRIBUTES: dict[Labels, dict[str, str]] = {}


def _attributes(labels: Labels) -> dict[str, str]:
    found = _ATTRIBUTES.get(labels)
    if found is not None:
        return found
    attributes = {
        "jobrunner.job.name": labels[0],
        "messaging.destination.name": labels[1],
        "jobrunner.runner_type": labels[2],
    }
    if labels[3]:
        attributes["jobrunner.tenant"] = labels[3]
    if len(_ATTRIBUTES) < 10_000:  # bounded labels; never grow without bound all the same
        _ATTRIBUTES[labels] = attributes
    return attributes


def _count(kind: str, labels: Labels, amount: int = 1) -> None:
    _tallies.add(kind, labels, amount)
    _otel()  # the observable counters exist once OpenTelemetry is loaded


def _observe_counter(metrics: Any, kind: str, options: Any) -> list[Any]:
    # The SDK runs every observable callback of a collection before it reads its instruments:
    # the queued timings land on the histograms in time for this collection.
    _flush_timings()
    with _tallies.lock:
        values = list(_tallies.counters[kind].items())
    return [metrics.Observation(value, _attributes(labels)) for labels, value in values]


# -- enqueue -------------------------------------------------------------------------------------
class EnqueueSpan:
    """The span of one enqueue call (:func:`enqueue_span`); :meth:`done` reports what it
    wrote.

    A class rather than a generator context manager: it wraps every enqueue, and without a
    configured TracerProvider it makes no span and costs next to nothing.
    """

    __slots__ = ("_queue", "_runner_type", "_scope", "_span", "name")

    def __init__(self, name: object, queue: object, runner_type: str) -> None:
        self.name = name if isinstance(name, str) else "?"
        self._queue = queue if isinstance(queue, str) else None
        self._runner_type = runner_type
        self._span: Any = None
        self._scope: Any = None

    def __enter__(self) -> EnqueueSpan:
        otel = _otel()
        tracer = otel.active_tracer() if otel is not None else None
        if otel is None or tracer is None:
            # No span to make: the API's no-op one would carry the current context, which
            # attach_trace_context stores with the job all the same.
            return self
        scope = tracer.start_as_current_span(
            f"jobrunner.enqueue {self.name}",
            kind=otel.trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": _MESSAGING_SYSTEM,
                "messaging.operation.type": "create",
                "messaging.operation.name": "enqueue",
                "jobrunner.job.name": self.name,
                "jobrunner.runner_type": self._runner_type,
            },
        )
        self._span = scope.__enter__()
        self._scope = scope
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        scope, self._scope = self._scope, None
        return None if scope is None else bool(scope.__exit__(*exc_info))

    def done(self, handles: list[Any], queue: str | None = None) -> None:
        """Record the jobs written (``ScheduledJob`` handles) on the span and the counter."""
        queue_name = queue or self._queue or "default"
        created = [h for h in handles if getattr(h, "created", True)]
        if created:
            tenant = created[0].tenant
            _count(
                "enqueued", _labels(self.name, queue_name, self._runner_type, tenant), len(created)
            )
        span = self._span
        if span is None or not span.is_recording():
            return
        span.set_attribute("messaging.destination.name", queue_name)
        if len(handles) == 1:
            handle = handles[0]
            span.set_attribute("messaging.message.id", str(handle.job_id))
            span.set_attribute("jobrunner.job_id", str(handle.job_id))
            span.set_attribute("jobrunner.tenant", str(handle.tenant))
            span.set_attribute("jobrunner.created", bool(getattr(handle, "created", True)))
        else:
            span.set_attribute("messaging.batch.message_count", len(handles))
            if handles:
                span.set_attribute("jobrunner.tenant", str(handles[0].tenant))


def enqueue_span(name: object, queue: object, runner_type: str) -> EnqueueSpan:
    """A producer span ``jobrunner.enqueue <name>`` around an enqueue (``with``), made
    current so that :func:`attach_trace_context` stores it with the job; errors are recorded
    on it."""
    return EnqueueSpan(name, queue, runner_type)


def attach_trace_context(metadata: dict[str, Any]) -> dict[str, Any]:
    """Store the current trace context in ``metadata`` (in place; returned for chaining).

    Only while a span is recording (an enqueue span under a configured TracerProvider): with
    tracing off the metadata is left exactly as given.
    """
    carrier = _current_carrier()
    if carrier:
        metadata[TRACE_CONTEXT_KEY] = carrier
    return metadata


_IN_ENQUEUE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jobrunner_in_enqueue", default=False
)

F = TypeVar("F", bound=Callable[..., Any])


def enqueue_boundary(method: F) -> F:
    """Decorate a runner's ``schedule_job`` / ``schedule_job_at`` / ``schedule_jobs``.

    The outermost call (the sync twin's, or the async runner's when called directly) runs in
    an enqueue span whose trace context is stored in the jobs' metadata, and counts the jobs
    written; every call binds the returned handles to its runner, so ``handle.result()``
    waits through it (blocking for the sync twin, whose calls run the async runner's inside).
    """
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def enqueue_async(self: Any, name: Any, *args: Any, **options: Any) -> Any:
            if _IN_ENQUEUE.get():
                return _bind(await method(self, name, *args, **options), self, sync=False)
            token = _IN_ENQUEUE.set(True)
            try:
                with enqueue_span(name, options.get("queue"), _runner_type(self)) as span:
                    result = await method(self, name, *args, **_traced(options))
                    span.done(_handles(result), _queue_of(self, name, options))
            finally:
                _IN_ENQUEUE.reset(token)
            return _bind(result, self, sync=False)

        return cast(F, enqueue_async)

    @functools.wraps(method)
    def enqueue_sync(self: Any, name: Any, *args: Any, **options: Any) -> Any:
        token = _IN_ENQUEUE.set(True)
        try:
            with enqueue_span(name, options.get("queue"), _runner_type(self)) as span:
                result = method(self, name, *args, **_traced(options))
                span.done(_handles(result), _queue_of(self, name, options))
        finally:
            _IN_ENQUEUE.reset(token)
        return _bind(result, self, sync=True)

    return cast(F, enqueue_sync)


def _runner_type(runner: Any) -> str:
    return str(getattr(runner, "runner_type", "") or "")


def _traced(options: dict[str, Any]) -> dict[str, Any]:
    metadata = options.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        return options  # validation refuses it
    carrier = _current_carrier()
    if not carrier:
        return options
    return {**options, "metadata": {**(metadata or {}), TRACE_CONTEXT_KEY: carrier}}


def _current_carrier() -> dict[str, str] | None:
    otel = _otel()
    if otel is None or not otel.trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    otel.propagate.inject(carrier)
    return carrier or None


def _handles(result: Any) -> list[Any]:
    if isinstance(result, ScheduledJob):
        return [result]
    return list(result) if isinstance(result, list) else []


def _bind(result: Any, runner: Any, *, sync: bool) -> Any:
    if isinstance(result, ScheduledJob):
        return bind_handle(result, runner, sync=sync)
    if isinstance(result, list):
        return [
            bind_handle(h, runner, sync=sync) if isinstance(h, ScheduledJob) else h for h in result
        ]
    return result


def _queue_of(runner: Any, name: object, options: Mapping[str, Any]) -> str | None:
    queue = options.get("queue")
    if isinstance(queue, str):
        return queue
    registry = getattr(runner, "registry", None) or getattr(
        getattr(runner, "runner", None), "registry", None
    )
    try:
        spec = registry.find(name) if registry is not None and isinstance(name, str) else None
    except Exception:  # noqa: BLE001 - a label, never a reason to fail an enqueue
        spec = None
    return spec.queue if spec is not None else None


def record_enqueued(name: str, queue: str, runner_type: str, tenant: object, count: int) -> None:
    """Count ``count`` jobs enqueued outside :func:`enqueue_span` (recurring schedule runs)."""
    if count > 0:
        _count("enqueued", _labels(name, queue, runner_type, tenant), count)


# -- attempts ------------------------------------------------------------------------------------
class AttemptSpan:
    """The consumer span ``jobrunner.run <name>`` of one attempt (a no-op without tracing).

    ``with span.current():`` makes it the current span; a plain class rather than a generator
    context manager, as it runs once per attempt.
    """

    __slots__ = ("_otel", "_span", "_token")

    def __init__(self, otel: _Otel | None, span: Any) -> None:
        self._otel = otel
        self._span = span
        self._token: Any = None

    def current(self) -> AttemptSpan:
        """Make the span current (handler tasks and threads started inside inherit it)."""
        return self

    def __enter__(self) -> None:
        if self._span is not None:
            assert self._otel is not None
            self._token = self._otel.context.attach(
                self._otel.trace.set_span_in_context(self._span)
            )

    def __exit__(self, *exc_info: object) -> None:
        token, self._token = self._token, None
        if token is not None:
            assert self._otel is not None
            self._otel.context.detach(token)

    def end(self, outcome: str, error: JobError | None, attributes: Mapping[str, Any]) -> None:
        """End the span with the attempt's outcome; a failure is recorded as its error."""
        span = self._span
        if span is None:
            return
        if span.is_recording():
            span.set_attribute("jobrunner.outcome", outcome)
            for key, value in attributes.items():
                if value is not None:
                    span.set_attribute(key, value)
            if error is not None:
                assert self._otel is not None
                span.add_event(
                    "exception",
                    {
                        "exception.type": error.type,
                        "exception.message": error.message,
                        "exception.stacktrace": error.traceback or "",
                    },
                )
                span.set_status(self._otel.trace.Status(self._otel.trace.StatusCode.ERROR))
                span.set_attribute("error.type", error.type)
        span.end()


_NO_ATTEMPT_SPAN = AttemptSpan(None, None)  # stateless when it has no span: one for all

_RUN_ATTRIBUTES: dict[tuple[str, str, str], dict[str, Any]] = {}


def _run_attributes(name: str, queue: str, runner_type: str) -> dict[str, Any]:
    """The attributes an attempt's span shares with every attempt of its job name and queue."""
    key = (name, queue, runner_type)
    found = _RUN_ATTRIBUTES.get(key)
    if found is None:
        found = {
            "messaging.system": _MESSAGING_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "jobrunner.job.name": name,
            "jobrunner.runner_type": runner_type,
        }
        if len(_RUN_ATTRIBUTES) < 10_000:
            _RUN_ATTRIBUTES[key] = found
    return found


def attempt_span(
    *,
    name: str,
    job_id: object,
    tenant: object,
    attempt: int,
    queue: str,
    runner_type: str,
    carrier: object,
) -> AttemptSpan:
    """Start the span of an attempt as a child of the enqueuer's span (``carrier``, the
    stored trace context), or as a new trace when there is none.

    Without a configured TracerProvider and without a stored context this is a shared no-op
    (nothing built, nothing made current): the API's no-op tracer would return a span of the
    current context, so making it current would change nothing. A stored context is still
    made current then (as the API does), so the jobs this attempt enqueues carry it on.
    """
    otel = _otel()
    if otel is None:
        return _NO_ATTEMPT_SPAN
    tracer = otel.active_tracer()
    parent = None
    if isinstance(carrier, Mapping):
        values = {str(k): v for k, v in carrier.items() if isinstance(v, str)}
        # A malformed stored context extracts as none: the attempt starts a new trace.
        parent = otel.propagate.extract(values)
        if tracer is None:
            tracer = otel.tracer  # the API's no-op: a non-recording span of the stored context
    elif tracer is None:
        return _NO_ATTEMPT_SPAN
    # The sampler sees the attributes every attempt of this job name shares; the job's own
    # are added only when the span records (most are not, under a ratio sampler).
    span = tracer.start_span(
        f"jobrunner.run {name}",
        context=parent,
        kind=otel.trace.SpanKind.CONSUMER,
        attributes=_run_attributes(name, queue, runner_type),
    )
    if span.is_recording():
        job = str(job_id)
        span.set_attributes(
            {
                "messaging.message.id": job,
                "jobrunner.job_id": job,
                "jobrunner.tenant": str(tenant),
                "jobrunner.attempt": attempt,
            }
        )
    return AttemptSpan(otel, span)


def record_attempt(
    kind: str | None,
    *,
    name: str,
    queue: str,
    runner_type: str,
    tenant: object,
    duration: float,
    queue_wait: float | None,
) -> None:
    """Count an attempt's outcome (``kind`` is a counter kind or ``None``) and its timings.

    The counters are observable instruments (read from the tallies when the SDK collects);
    the timings go to the OpenTelemetry histograms in batches (:func:`_flush_timings`).
    """
    labels = _labels(name, queue, runner_type, tenant)
    otel = _otel()
    if _tallies.attempt(kind, labels, duration, queue_wait, otel is not None and otel.metered()):
        _flush_timings()


#: Attempts whose timings are queued before they are recorded on the OpenTelemetry histograms.
_FLUSH_TIMINGS_AT = 256


def _flush_timings() -> None:
    """Record the queued attempt timings on the OpenTelemetry histograms.

    Called when :data:`_FLUSH_TIMINGS_AT` attempts are queued and from the observable counters'
    callback, which the SDK runs at the start of every collection: a reader always sees every
    attempt finished before it collected, each measurement with its value and attributes as
    if recorded at the attempt's end. The OpenTelemetry metrics API has no batch record and no
    observable histogram; recording the queue in one go keeps the SDK's code and data hot in
    the CPU caches, where one record per attempt between the worker's other work costs about
    twice as much (docs/performance.md, "Observability overhead"). A background thread would
    take the work off the event loop but not off the GIL: measured, it made the drain slower.
    The measurements are made outside the attempt's context, as they always were: no exemplar
    links them to its span. Nothing is queued while no MeterProvider is configured (the API's
    proxy instruments would drop the measurements).
    """
    otel = _otel()
    pending = _tallies.take_pending()
    if otel is None or not pending:
        return
    duration, queue_wait = otel.duration.record, otel.queue_wait.record
    for labels, took, waited in pending:
        attributes = _attributes(labels)
        duration(took, attributes)
        if waited is not None:
            queue_wait(waited, attributes)


# -- steps ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def step_span(step: str, *, job_name: str, job_id: object, attempt: int) -> Iterator[None]:
    """A span ``jobrunner.step <step>`` around a ``ctx.step`` block (child of the current
    span: the attempt's, or one the handler opened); its error is recorded."""
    otel = _otel()
    tracer = otel.active_tracer() if otel is not None else None
    if tracer is None:
        # The API's no-op span would carry the current context: current already.
        yield
        return
    with tracer.start_as_current_span(
        f"jobrunner.step {step}",
        attributes={
            "jobrunner.step": step,
            "jobrunner.job.name": job_name,
            "jobrunner.job_id": str(job_id),
            "jobrunner.attempt": attempt,
        },
    ):
        yield
