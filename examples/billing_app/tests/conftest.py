"""Application state the tests reset; the runners come from jobrunner's pytest plugin."""

from __future__ import annotations

import pytest

from billing_app.gateway import gateway
from billing_app.jobs import OUTBOX


@pytest.fixture(autouse=True)
def clean_state() -> None:
    OUTBOX.clear()
    gateway.charges.clear()
    gateway.outages = 0
    gateway.declined.clear()
