"""The monitoring dashboard as a Django view, behind Django's authentication.

Route it in ``urls.py`` (before ``admin/`` when under it, whose catch-all would answer
first)::

    urlpatterns = [
        path("admin/jobs/", include("jobrunner.contrib.django.urls")),
        path("admin/", admin.site.urls),
    ]

Anonymous users are sent to ``settings.LOGIN_URL`` (JSON endpoints answer 401); signed-in
users need ``JOBRUNNER["DASHBOARD"]["PERMISSION"]`` (default: active staff) or get 403. The
tenant each user sees is ``JOBRUNNER["DASHBOARD"]["TENANT"]`` (default: every tenant).

The dashboard itself is the ASGI application of :mod:`jobrunner.dashboard`: this view hands
it the request on the runner's event loop and returns its answer, under WSGI and ASGI alike.
The dashboard's own CSRF protection (a token bound to its cookie) guards its forms, so the
view is exempt from Django's.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from http.cookies import SimpleCookie
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from jobrunner._errors import ConfigurationError
from jobrunner._runner import JobRunner
from jobrunner.contrib.django._runner import config, get_runner, run_on_runner_loop

__all__ = ["dashboard_view", "staff_only"]

_USER = "jobrunner.django.user"
_TENANT = "jobrunner.django.tenant"
_READ_ONLY = "jobrunner.django.read_only"

_lock = threading.Lock()
_built: tuple[JobRunner, Any] | None = None


def staff_only(request: HttpRequest) -> bool:
    """The default permission: active staff users."""
    user = request.user
    return bool(user.is_active and user.is_staff)


def _dashboard_for(runner: JobRunner) -> Any:
    """The dashboard app reading from ``runner`` (rebuilt when the project's runner is)."""
    global _built
    with _lock:
        if _built is None or _built[0] is not runner:
            from jobrunner.dashboard import create_app

            dashboard = config().dashboard
            app = create_app(
                runner=runner,
                auth=lambda request: request.scope[_USER],
                tenant=lambda request, user: request.scope[_TENANT],
                read_only=lambda request, user: request.scope[_READ_ONLY],
                title=dashboard.title,
                refresh_seconds=dashboard.refresh_seconds,
                # Stable across processes and restarts, and not the SECRET_KEY itself.
                csrf_secret=hashlib.sha256(
                    b"jobrunner-dashboard-csrf:" + str(django_settings.SECRET_KEY).encode()
                ).digest(),
                # Django has checked the Host header against ALLOWED_HOSTS (dashboard_view).
                allowed_hosts=["*"],
            )
            _built = (runner, app)
        return _built[1]


@csrf_exempt  # type: ignore[untyped-decorator]  # django has no stubs here
def dashboard_view(request: HttpRequest, subpath: str = "") -> HttpResponse:
    """Every dashboard URL: pages, JSON endpoints, actions and assets."""
    request.get_host()  # DisallowedHost (400) unless the Host is one of ALLOWED_HOSTS
    user = getattr(request, "user", None)
    if user is None:
        raise ConfigurationError(
            "the jobrunner dashboard needs django.contrib.auth's AuthenticationMiddleware"
        )
    if not user.is_authenticated:
        if subpath.lstrip("/").startswith("api/"):
            return HttpResponse("authentication required", status=401, content_type="text/plain")
        from django.contrib.auth.views import redirect_to_login

        return redirect_to_login(request.get_full_path())
    dashboard = config().dashboard
    if not dashboard.permission(request):
        raise PermissionDenied("you may not see background jobs")
    tenant = dashboard.tenant
    if callable(tenant):
        tenant = tenant(request)
    read_only = dashboard.read_only
    if callable(read_only):
        read_only = bool(read_only(request))
    runner = get_runner()
    app = _dashboard_for(runner.runner)
    extra = {_USER: user, _TENANT: tenant, _READ_ONLY: read_only}
    return run_on_runner_loop(runner, _call_asgi(app, request, subpath, extra))


def _scope(request: HttpRequest, subpath: str, extra: dict[str, Any]) -> dict[str, Any]:
    full = request.path
    inner = subpath.lstrip("/")
    # What the URL pattern matched before the captured sub-path is where the dashboard is
    # mounted (SCRIPT_NAME and any include() prefixes included).
    mount = (full[: len(full) - len(subpath)] if subpath else full).rstrip("/")
    headers = [
        (name.lower().encode("latin-1"), str(value).encode("latin-1"))
        for name, value in request.headers.items()
    ]
    port = request.META.get("SERVER_PORT") or ("443" if request.is_secure() else "80")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": f"{mount}/{inner}",
        "root_path": mount,
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
        "client": (request.META.get("REMOTE_ADDR") or "", 0),
        "server": (request.META.get("SERVER_NAME") or "localhost", int(port)),
        "state": {},
        **extra,
    }


async def _call_asgi(
    app: Any, request: HttpRequest, subpath: str, extra: dict[str, Any]
) -> HttpResponse:
    scope = _scope(request, subpath, extra)
    body = request.body
    body_sent = False
    finished = asyncio.Event()
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                finished.set()

    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    return _django_response(status, headers, b"".join(chunks))


def _django_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> HttpResponse:
    response = HttpResponse(body, status=status)
    del response.headers["Content-Type"]
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name.lower() == "set-cookie":
            # Django keeps one value per header name; cookies go through its cookie jar.
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(value)
            for key, morsel in cookie.items():
                response.cookies[key] = morsel
        elif name in response.headers:
            response.headers[name] = f"{response.headers[name]}, {value}"
        else:
            response.headers[name] = value
    return response
