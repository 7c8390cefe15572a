"""The dashboard's Starlette application."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobrunner._errors import InvalidArgumentError, JobRunnerError
from jobrunner._factory import JobRunnerFactory
from jobrunner._limits import MAX_HISTORY_AGE_SECONDS, MAX_TIMESTAMP, MIN_TIMESTAMP
from jobrunner._metrics import metrics_text
from jobrunner._models import JobInfo, JobStatus, Metrics
from jobrunner._runner import ALL_TENANTS, AllTenants, JobRunner
from jobrunner._validation import as_aware_datetime, as_tenant
from jobrunner.dashboard._security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    AuthError,
    Csrf,
    HostCheckMiddleware,
    SecurityHeadersMiddleware,
    check_allowed_hosts,
)

RunnerSource = JobRunner | Callable[[], Awaitable[JobRunner]] | None
TenantView = uuid.UUID | AllTenants
TenantSpec = uuid.UUID | str | AllTenants | None | Callable[[Request, Any], Any]
AuthHook = Callable[[Request], Any]
ReadOnlySpec = bool | Callable[[Request, Any], Any]

PAGE_SIZES = (10, 25, 50, 100, 200)
_MAX_DAYS = int(MAX_HISTORY_AGE_SECONDS // 86_400)
KNOWN_RUNNER_TYPES = ("postgres", "temporal", "memory")
NOTICES = {
    "cancelled": "The job was cancelled.",
    "cancel-refused": "Nothing to cancel: the job is not live any more.",
    "retried": "The job was queued again.",
    "retry-refused": "The job cannot be retried (only failed or cancelled jobs of this "
    "backend can; another live job may hold its singleton key).",
}
LIVE = {
    s.value
    for s in (
        JobStatus.WAITING,
        JobStatus.PENDING,
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        JobStatus.RETRYING,
    )
}


@dataclasses.dataclass(frozen=True)
class View:
    """What one request may see and do."""

    principal: Any
    tenant: TenantView
    read_only: bool
    csrf_cookie: str
    new_cookie: bool
    base: str

    @property
    def all_tenants(self) -> bool:
        return isinstance(self.tenant, AllTenants)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class Dashboard:
    """Holds the configuration; its methods are the routes."""

    def __init__(
        self,
        runner: RunnerSource,
        *,
        auth: AuthHook | None,
        read_only: ReadOnlySpec,
        tenant: TenantSpec,
        title: str,
        refresh_seconds: float,
        csrf_secret: bytes | str | None,
        secure_cookies: bool | None,
    ) -> None:
        if runner is not None and not isinstance(runner, JobRunner) and not callable(runner):
            raise InvalidArgumentError("runner must be a JobRunner, an async factory or None")
        if auth is not None and not callable(auth):
            raise InvalidArgumentError("auth must be a callable taking the request")
        if not isinstance(read_only, bool) and not callable(read_only):
            raise InvalidArgumentError("read_only must be a bool or a callable")
        if not isinstance(refresh_seconds, int | float) or not 0.1 <= refresh_seconds <= 3600:
            raise InvalidArgumentError("refresh_seconds must be between 0.1 and 3600")
        if tenant is None or isinstance(tenant, AllTenants):
            self._static_tenant: TenantView | None = ALL_TENANTS
            self._tenant_resolver = None
        elif callable(tenant):
            self._static_tenant = None
            self._tenant_resolver = tenant
        else:
            self._static_tenant = as_tenant(tenant)
            self._tenant_resolver = None
        self._runner_source = runner
        self._runner: JobRunner | None = runner if isinstance(runner, JobRunner) else None
        self._runner_lock: asyncio.Lock | None = None
        self.auth = auth
        self.read_only = read_only
        self.title = title
        self.refresh_ms = int(refresh_seconds * 1000)
        try:
            self.csrf = Csrf(csrf_secret)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self.secure_cookies = secure_cookies
        self.env = Environment(
            loader=PackageLoader("jobrunner.dashboard", "templates"),
            autoescape=select_autoescape(["html"], default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ts"] = _fmt_time
        self.env.filters["duration"] = _fmt_duration
        self.env.filters["pretty"] = _pretty_json
        self.env.filters["age"] = _fmt_age
        self.env.globals["NOTICES"] = NOTICES

    # -- plumbing ---------------------------------------------------------------------------
    async def runner(self) -> JobRunner:
        """The runner, built on first use from the factory when none was given."""
        if self._runner is not None:
            return self._runner
        if self._runner_lock is None:
            self._runner_lock = asyncio.Lock()
        async with self._runner_lock:
            if self._runner is None:
                if self._runner_source is None:
                    self._runner = await JobRunnerFactory.get_instance()
                else:
                    source = self._runner_source
                    assert callable(source)
                    self._runner = await source()
        return self._runner

    async def view(self, request: Request) -> View:
        """Authenticate, resolve tenant scope and permissions (raises AuthError)."""
        principal: Any = True
        if self.auth is not None:
            try:
                principal = await _maybe_await(self.auth(request))
            except PermissionError as exc:
                raise AuthError(403, str(exc) or "forbidden") from None
            except HTTPException:
                raise
            if principal is None or principal is False:
                raise AuthError(401, "authentication required")
        if self._tenant_resolver is not None:
            resolved = await _maybe_await(self._tenant_resolver(request, principal))
            if resolved is None:
                raise AuthError(403, "no tenant for this user")
            tenant: TenantView = (
                resolved if isinstance(resolved, AllTenants) else as_tenant(resolved)
            )
        else:
            assert self._static_tenant is not None
            tenant = self._static_tenant
        if isinstance(self.read_only, bool):
            read_only = self.read_only
        else:
            read_only = bool(await _maybe_await(self.read_only(request, principal)))
        cookie = request.cookies.get(CSRF_COOKIE)
        new_cookie = not cookie or len(cookie) > 200
        if new_cookie:
            cookie = self.csrf.new_cookie()
        assert cookie is not None
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return View(principal, tenant, read_only, cookie, new_cookie, base)

    def render(
        self, request: Request, view: View, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        page = self.env.get_template(template).render(
            title=self.title,
            base=view.base,
            view=view,
            csrf_field=CSRF_FIELD,
            csrf_token=self.csrf.token_for(view.csrf_cookie),
            refresh_ms=self.refresh_ms,
            url=lambda path, **q: _url(view.base, path, **q),
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        self._cookie(request, view, response)
        return response

    def _cookie(self, request: Request, view: View, response: Response) -> None:
        if not view.new_cookie:
            return
        secure = self.secure_cookies
        if secure is None:
            secure = request.url.scheme == "https"
        response.set_cookie(
            CSRF_COOKIE,
            view.csrf_cookie,
            httponly=True,
            samesite="strict",
            secure=secure,
            path=(view.base or "") + "/",
        )

    async def check_post(self, request: Request, view: View) -> dict[str, str]:
        """Read a POSTed form after the read-only and CSRF checks."""
        if view.read_only:
            raise AuthError(403, "this dashboard is read-only")
        if request.headers.get("sec-fetch-site", "same-origin") == "cross-site":
            raise AuthError(403, "cross-site request refused")
        form = await request.form(max_files=0, max_fields=20, max_part_size=4096)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if view.new_cookie or not self.csrf.valid(
            request.cookies.get(CSRF_COOKIE), values.get(CSRF_FIELD)
        ):
            raise AuthError(403, "invalid or missing CSRF token; reload the page and try again")
        return values

    def job_tenant(self, view: View, raw: str) -> uuid.UUID:
        """The tenant of a job URL; another tenant than the view's is "not found"."""
        try:
            tenant = uuid.UUID(raw)
        except ValueError:
            raise HTTPException(404) from None
        if not view.all_tenants and tenant != view.tenant:
            raise HTTPException(404)
        return tenant

    # -- pages ------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        view = await self.view(request)
        runner = await self.runner()
        metrics = await runner.get_metrics(tenant=view.tenant)
        recent = await runner.list_jobs(tenant=view.tenant, limit=10)
        return self.render(
            request,
            view,
            "overview.html",
            metrics=metrics,
            recent=recent.jobs,
            runner_type=runner.runner_type,
            page="overview",
        )

    async def jobs(self, request: Request) -> Response:
        view = await self.view(request)
        runner = await self.runner()
        form = _JobFilters.from_query(request, view)
        error = form.error
        jobs: list[JobInfo] = []
        next_cursor = None
        if error is None:
            try:
                page = await runner.list_jobs(**form.arguments(view))
                jobs, next_cursor = page.jobs, page.next_cursor
            except InvalidArgumentError as exc:
                error = str(exc)
        next_url = None
        if next_cursor:
            next_url = _url(
                view.base, "/jobs", **form.query(cursor=next_cursor, page=form.page + 1)
            )
        return self.render(
            request,
            view,
            "jobs.html",
            status=400 if error else 200,
            jobs=jobs,
            form=form,
            error=error,
            next_url=next_url,
            first_url=_url(view.base, "/jobs", **form.query()),
            statuses=[s.value for s in JobStatus],
            runner_types=KNOWN_RUNNER_TYPES,
            page_sizes=PAGE_SIZES,
            page="jobs",
        )

    async def job(self, request: Request) -> Response:
        view = await self.view(request)
        tenant = self.job_tenant(view, request.path_params["tenant"])
        job_id = _job_id(request.path_params["job_id"])
        runner = await self.runner()
        details = await runner.get_job_details(job_id, tenant=tenant)
        if details is None:
            raise HTTPException(404)
        notice = request.query_params.get("notice")
        own_backend = details.job.runner_type == runner.runner_type
        return self.render(
            request,
            view,
            "job.html",
            details=details,
            job=details.job,
            live=details.job.status.value in LIVE,
            # Cancel and retry go through this dashboard's runner, which acts only on jobs of
            # its own backend (a Temporal job needs its workflow cancelled, for one).
            own=own_backend,
            can_cancel=own_backend and details.job.status.value in LIVE,
            can_retry=own_backend and details.job.status in (JobStatus.FAILED, JobStatus.CANCELLED),
            notice=NOTICES.get(notice or ""),
            notice_ok=not (notice or "").endswith("refused"),
            runner_type=runner.runner_type,
            page="jobs",
        )

    async def job_action(self, request: Request) -> Response:
        view = await self.view(request)
        tenant = self.job_tenant(view, request.path_params["tenant"])
        job_id = _job_id(request.path_params["job_id"])
        await self.check_post(request, view)
        runner = await self.runner()
        action = request.path_params["action"]
        if action == "cancel":
            done = await runner.cancel_job(
                job_id,
                tenant=tenant,
                reason="cancelled from the dashboard",
                cancelled_by=_principal_name(view.principal),
            )
            notice = "cancelled" if done else "cancel-refused"
        elif action == "retry":
            done = await runner.retry_job(job_id, tenant=tenant)
            notice = "retried" if done else "retry-refused"
        else:
            raise HTTPException(404)
        target = _url(view.base, f"/jobs/{tenant}/{job_id}", notice=notice)
        return RedirectResponse(target, status_code=303)

    async def history(self, request: Request) -> Response:
        view = await self.view(request)
        raw = request.query_params.get("removed") or ""
        removed = _whole_number(raw, max_digits=11)
        return self.render(
            request,
            view,
            "history.html",
            removed=removed,
            error=None,
            values={},
            page="history",
        )

    async def history_clear(self, request: Request) -> Response:
        view = await self.view(request)
        values = await self.check_post(request, view)
        scope = values.get("scope", "finished")
        raw_days = values.get("older_than_days", "").strip()
        error = None
        older: timedelta | None = None
        if scope not in ("finished", "all"):
            error = "Choose what to clear."
        elif raw_days:
            days = _whole_number(raw_days, max_digits=6)
            if days is None or days > _MAX_DAYS:
                error = f"Older than must be a whole number of days (0 to {_MAX_DAYS})."
            else:
                older = timedelta(days=days)
        tenant: TenantView = view.tenant
        raw_tenant = values.get("tenant", "").strip()
        if error is None and view.all_tenants and raw_tenant:
            try:
                tenant = uuid.UUID(raw_tenant)
            except ValueError:
                error = "Tenant must be a UUID."
        if error is not None:
            return self.render(
                request,
                view,
                "history.html",
                status=400,
                removed=None,
                error=error,
                values=values,
                page="history",
            )
        runner = await self.runner()
        removed = await runner.clear_history(
            tenant=tenant,
            scope=scope,  # type: ignore[arg-type]
            older_than=older,
        )
        return RedirectResponse(_url(view.base, "/history", removed=str(removed)), status_code=303)

    # -- JSON -------------------------------------------------------------------------------
    async def api_metrics(self, request: Request) -> Response:
        view = await self.view(request)
        runner = await self.runner()
        metrics = await runner.get_metrics(tenant=view.tenant)
        recent = await runner.list_jobs(tenant=view.tenant, limit=10)
        body = _metrics_json(metrics)
        body["recent"] = [_job_json(j, view.base) for j in recent.jobs]
        return JSONResponse(body)

    async def api_jobs(self, request: Request) -> Response:
        view = await self.view(request)
        form = _JobFilters.from_query(request, view)
        if form.error:
            return JSONResponse({"error": form.error}, status_code=400)
        runner = await self.runner()
        try:
            page = await runner.list_jobs(**form.arguments(view))
        except InvalidArgumentError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(
            {"jobs": [_job_json(j, view.base) for j in page.jobs], "next_cursor": page.next_cursor}
        )

    async def api_job(self, request: Request) -> Response:
        view = await self.view(request)
        tenant = self.job_tenant(view, request.path_params["tenant"])
        job_id = _job_id(request.path_params["job_id"])
        runner = await self.runner()
        details = await runner.get_job_details(job_id, tenant=tenant)
        if details is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        body = _job_json(details.job, view.base)
        body["data"] = details.data
        body["steps"] = [_plain(s) for s in details.steps]
        for kind in ("dependencies", "dependents", "children"):
            body[kind] = [_plain(r) for r in getattr(details, kind)]
        body["parent_job_id"] = details.parent_job_id
        return JSONResponse(json.loads(json.dumps(body, default=str)))

    async def prometheus(self, request: Request) -> Response:
        """``GET /metrics``: the Prometheus text format, behind the same auth hook and tenant
        scope as every page (docs/reference/metrics.md)."""
        view = await self.view(request)
        runner = await self.runner()
        body = await metrics_text(runner, tenant=view.tenant)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- errors -----------------------------------------------------------------------------
    async def on_error(self, request: Request, exc: Exception) -> Response:
        wants_json = request.url.path.startswith(
            str(request.scope.get("root_path", "")).rstrip("/") + "/api/"
        )
        if isinstance(exc, AuthError):
            status, message = exc.status, exc.message
        elif isinstance(exc, HTTPException):
            status = exc.status_code
            message = {404: "Not found.", 405: "Method not allowed."}.get(status, str(exc.detail))
        elif isinstance(exc, InvalidArgumentError):
            status, message = 400, str(exc)
        elif isinstance(exc, JobRunnerError):
            status, message = 503, "The job backend failed; see the server log."
        else:  # pragma: no cover - Starlette's own 500 handler takes the rest
            raise exc
        headers = {"www-authenticate": "Bearer"} if status == 401 else None
        if wants_json:
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        page = self.env.get_template("error.html").render(
            title=self.title,
            base=str(request.scope.get("root_path", "")).rstrip("/"),
            status=status,
            message=message,
            view=None,
            page=None,
            url=lambda path, **q: _url(
                str(request.scope.get("root_path", "")).rstrip("/"), path, **q
            ),
        )
        return HTMLResponse(page, status_code=status, headers=headers)


@dataclasses.dataclass
class _JobFilters:
    """The jobs page's filter form, parsed from the query string."""

    status: list[str]
    name: str
    runner_type: str
    tenant: str
    date_from: str
    date_to: str
    q: str
    limit: int
    cursor: str
    page: int
    error: str | None

    @classmethod
    def from_query(cls, request: Request, view: View) -> _JobFilters:
        qp = request.query_params
        error = None
        limit = _whole_number(qp.get("limit", "50"), max_digits=3) or 50
        if limit not in PAGE_SIZES:
            limit = 50
        page = _whole_number(qp.get("page", "1"), max_digits=6) or 1
        statuses = [s for s in qp.getlist("status") if s]
        for s in statuses:
            if s not in {x.value for x in JobStatus}:
                error = f"Unknown status {s!r}."
        form = cls(
            status=statuses,
            name=qp.get("name", "").strip(),
            runner_type=qp.get("runner_type", "").strip(),
            tenant=qp.get("tenant", "").strip(),
            date_from=qp.get("from", "").strip(),
            date_to=qp.get("to", "").strip(),
            q=qp.get("q", "").strip(),
            limit=limit,
            cursor=qp.get("cursor", ""),
            page=page,
            error=error,
        )
        if form.tenant and not view.all_tenants:
            form.tenant = ""  # a tenant-restricted view has no tenant filter
        if form.tenant:
            try:
                uuid.UUID(form.tenant)
            except ValueError:
                form.error = "Tenant must be a UUID."
        for raw in (form.date_from, form.date_to):
            if raw and _parse_day(raw) is None:
                form.error = f"Dates must look like 2024-12-31, got {raw[:40]!r}."
        if form.error is None:
            try:
                # The same range checks list_jobs runs, on the bounds these days become.
                form.bounds()
            except InvalidArgumentError:
                form.error = (
                    f"Dates must lie between {MIN_TIMESTAMP.date().isoformat()} and "
                    f"{(MAX_TIMESTAMP.date() - timedelta(days=1)).isoformat()}."
                )
        return form

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """``created_after`` and ``created_before`` of the date fields (the ``to`` day is
        included whole), range-checked.

        Raises:
            InvalidArgumentError: a day lies outside the accepted timestamp range.
        """
        start = _parse_day(self.date_from) if self.date_from else None
        end = _parse_day(self.date_to) if self.date_to else None
        after = None if start is None else as_aware_datetime(start, "from")
        before = None
        if end is not None:
            try:
                before = end + timedelta(days=1)
            except OverflowError:
                raise InvalidArgumentError("to is out of range") from None
            before = as_aware_datetime(before, "to")
        return after, before

    def arguments(self, view: View) -> dict[str, Any]:
        tenant: TenantView = view.tenant
        if view.all_tenants and self.tenant:
            tenant = uuid.UUID(self.tenant)
        created_after, created_before = self.bounds()
        return {
            "tenant": tenant,
            "status": self.status or None,
            "name": self.name or None,
            "runner_type": self.runner_type or None,
            "created_after": created_after,
            "created_before": created_before,
            "search": self.q or None,
            "limit": self.limit,
            "cursor": self.cursor or None,
        }

    def query(self, **extra: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "status": self.status,
            "name": self.name,
            "runner_type": self.runner_type,
            "tenant": self.tenant,
            "from": self.date_from,
            "to": self.date_to,
            "q": self.q,
            "limit": self.limit if self.limit != 50 else "",
        }
        values.update(extra)
        return values


def _parse_day(raw: str) -> datetime | None:
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _whole_number(raw: str, *, max_digits: int) -> int | None:
    """A non-negative whole number written with ASCII digits (``str.isdigit`` also accepts
    ``"²"``, which ``int`` refuses), or ``None``."""
    if not raw or len(raw) > max_digits or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise HTTPException(404) from None


def _principal_name(principal: Any) -> str | None:
    if isinstance(principal, str):
        return principal[:200]
    name = getattr(principal, "name", None) or getattr(principal, "username", None)
    return str(name)[:200] if name else None


def _url(base: str, path: str, **query: Any) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None or value == "":
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, str(v)) for v in value)
        else:
            pairs.append((key, str(value)))
    suffix = ("?" + urlencode(pairs)) if pairs else ""
    return f"{base}{path}{suffix}"


def _fmt_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # isoformat, not strftime("%Y"): that drops the zero padding of years before 1000.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")


def _seconds_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def _fmt_duration(job: JobInfo) -> str:
    if job.started_at is None:
        return "—"
    end = job.completed_at
    if end is None:
        if job.status is not JobStatus.PROCESSING:
            return "—"
        end = datetime.now(UTC)
    return _seconds_text(max((end - job.started_at).total_seconds(), 0.0))


def _fmt_age(seconds: float | None) -> str:
    return "—" if seconds is None else _seconds_text(seconds)


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID | JobStatus):
        return str(value)
    return value


def _job_json(job: JobInfo, base: str) -> dict[str, Any]:
    body: dict[str, Any] = _plain(job)
    body["url"] = f"{base}/jobs/{job.tenant}/{job.job_id}"
    body["duration"] = _fmt_duration(job)
    body["created"] = _fmt_time(job.created_at)
    body["started"] = _fmt_time(job.started_at)
    body["ended"] = _fmt_time(job.completed_at)
    return body


def _metrics_json(m: Metrics) -> dict[str, Any]:
    return {
        "by_status": m.by_status,
        "total": m.total,
        "failed_last_24h": m.failed_last_24h,
        "success_rate": m.success_rate,
        "by_runner_type": m.by_runner_type,
        "throughput": [[t.isoformat(), n] for t, n in m.throughput_per_minute],
        "failures": [[t.isoformat(), n] for t, n in m.extra.get("failed_per_minute", [])],
        "oldest_queued_age_seconds": m.oldest_queued_age_seconds,
        "oldest_queued_age": _fmt_age(m.oldest_queued_age_seconds),
        "success_rate_text": "—" if m.success_rate is None else f"{m.success_rate * 100:.1f}%",
    }


def create_app(
    runner: RunnerSource = None,
    *,
    auth: AuthHook | None = None,
    read_only: ReadOnlySpec = False,
    tenant: TenantSpec = None,
    title: str = "jobrunner",
    refresh_seconds: float = 5.0,
    csrf_secret: bytes | str | None = None,
    secure_cookies: bool | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> Starlette:
    """The monitoring dashboard as an ASGI app; mount it under any path of a host app.

    Args:
        runner: The runner to read from and act through; an async callable returning one; or
            ``None`` for :meth:`JobRunnerFactory.get_instance` on first request.
        auth: Called with each request (sync or async). Return the principal (anything but
            ``None``/``False``) to allow it; return ``None`` for 401; raise ``PermissionError``
            for 403. ``None`` disables the hook (protect the mount otherwise!).
        read_only: ``True`` renders no actions and refuses every POST with 403; or a callable
            ``(request, principal) -> bool`` deciding per request.
        tenant: ``None`` or ``ALL_TENANTS``: an admin view across tenants (with a tenant
            filter). A UUID: only that tenant is ever shown. A callable
            ``(request, principal) -> tenant | ALL_TENANTS`` (sync or async) decides per
            request; returning ``None`` answers 403.
        title: Shown in the header and the page titles.
        refresh_seconds: How often the overview and live job pages poll for new figures.
        csrf_secret: Key binding CSRF tokens to their cookie (random per process when
            omitted; set it when several processes serve the dashboard).
        secure_cookies: Force the ``Secure`` cookie flag (default: when the request is HTTPS).
        allowed_hosts: ``Host`` header values the dashboard answers besides ``localhost``,
            ``127.0.0.1``, ``[::1]`` and the address the server accepted the connection on
            (any port unless an entry gives one: ``jobs.example.com``,
            ``jobs.example.com:8443``, ``[2001:db8::1]``); ``"*"`` allows every host. Other
            hosts get 400 before any route runs (DNS rebinding: docs/monitoring.md). Set it
            to the public name when the dashboard is mounted in an app served under one.

    Raises:
        InvalidArgumentError: an argument is malformed (an allowed host, the refresh, ...).

    Returns:
        A Starlette application.
    """
    try:
        hosts = check_allowed_hosts(allowed_hosts)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    dash = Dashboard(
        runner,
        auth=auth,
        read_only=read_only,
        tenant=tenant,
        title=title,
        refresh_seconds=refresh_seconds,
        csrf_secret=csrf_secret,
        secure_cookies=secure_cookies,
    )
    static = Path(__file__).with_name("static")
    routes = [
        Route("/", dash.overview, name="overview"),
        Route("/jobs", dash.jobs, name="jobs"),
        Route("/jobs/{tenant}/{job_id}", dash.job, name="job"),
        Route("/jobs/{tenant}/{job_id}/{action}", dash.job_action, methods=["POST"]),
        Route("/history", dash.history, name="history"),
        Route("/history/clear", dash.history_clear, methods=["POST"]),
        Route("/api/metrics", dash.api_metrics),
        Route("/api/jobs", dash.api_jobs),
        Route("/api/jobs/{tenant}/{job_id}", dash.api_job),
        Route("/metrics", dash.prometheus),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    handlers: dict[Any, Any] = {
        AuthError: dash.on_error,
        HTTPException: dash.on_error,
        InvalidArgumentError: dash.on_error,
        JobRunnerError: dash.on_error,
    }
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(HostCheckMiddleware, allowed_hosts=hosts),
        ],
        exception_handlers=handlers,
    )
    app.state.dashboard = dash
    return app
