"""URLs of the dashboard: ``path("admin/jobs/", include("jobrunner.contrib.django.urls"))``.

Its pages are then reversed as ``reverse("jobrunner:dashboard", kwargs={"subpath": ""})``.
"""

from __future__ import annotations

from django.urls import re_path

from jobrunner.contrib.django.dashboard import dashboard_view

app_name = "jobrunner"
urlpatterns = [re_path(r"^(?P<subpath>.*)\Z", dashboard_view, name="dashboard")]
