"""The monitoring dashboard (optional extra ``jobrunner-pg[dashboard]``).

``create_app(...)`` returns a Starlette ASGI application a host mounts under any path::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from jobrunner.dashboard import create_app

    app = Starlette(routes=[Mount("/admin/jobs", app=create_app(runner, auth=check_admin))])

See docs/monitoring.md for authentication, tenant scoping and read-only mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobrunner._errors import ConfigurationError

__all__ = ["create_app"]

if TYPE_CHECKING:
    from jobrunner.dashboard._app import create_app
else:

    def __getattr__(name: str) -> Any:
        # Imported on first use so that "import jobrunner.dashboard" explains a missing extra.
        if name == "create_app":
            try:
                from jobrunner.dashboard._app import create_app
            except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
                raise ConfigurationError(
                    f"the dashboard needs the 'dashboard' extra: pip install "
                    f"'jobrunner-pg[dashboard]' ({exc.name} is missing)"
                ) from exc
            return create_app
        raise AttributeError(name)
