"""billing-app: month-end invoicing on jobrunner (an example downstream application)."""

from billing_app.service import close_month, install_schedules

__all__ = ["close_month", "install_schedules"]
