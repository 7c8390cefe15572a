"""The dashboard in headless Chromium against a real PostgreSQL runner and worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from jobrunner import JobStatus

from .conftest import ARTIFACTS, PARKED, T1, T2, Site

pytestmark = pytest.mark.browser

TIMEOUT = 20_000  # ms; generous for a loaded 2-core machine


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(TIMEOUT)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" else None,
    )
    tab.expected_404 = False
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        tab.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
    if tab.expected_404:
        errors = [e for e in errors if "status of 404" not in e]
    # No script error and no CSP violation on any page a test visited.
    assert errors == [], errors


def shot(tab: Any, name: str, *, full: bool = True) -> None:
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


def test_overview_loads_and_updates_without_reload(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(site.url + "/")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("[data-metric=failed]")).to_have_text("4")  # T1 3 + T2 1
    expect(page.locator("#throughput rect").first).to_be_attached()
    expect(page.locator("#recent-jobs tbody tr").first).to_be_visible()
    expect(page.locator("#runner-types")).to_contain_text("postgres")
    queued = page.locator("[data-metric=queued]")
    before = int(queued.inner_text())
    page.evaluate("window.__sameDocument = 'yes'")
    shot(page, "overview")
    site.runner.schedule_job("send_email", {"to": "new"}, tenant=T1, queue=PARKED)
    expect(queued).to_have_text(str(before + 1))
    expect(page.locator("[data-metric=total]")).not_to_have_text("0")
    assert page.evaluate("window.__sameDocument") == "yes"  # updated in place, no reload


def test_filters_narrow_the_table(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(site.url + "/jobs")
    rows = page.locator("#jobs-table tbody tr")
    expect(rows.first).to_be_visible()
    everything = rows.count()
    assert everything >= 10
    page.select_option("#f-status", "failed")
    page.click("#f-apply")
    expect(page).to_have_url(re.compile(r"status=failed"))
    statuses = page.locator("#jobs-table tbody [data-status]")
    expect(statuses.first).to_be_visible()
    assert 0 < statuses.count() < everything
    assert set(statuses.all_inner_texts()) == {"failed"}
    shot(page, "jobs-filtered")
    # name + tenant narrow further; text search finds an error message
    page.fill("#f-tenant", str(T1))
    page.fill("#f-q", "rate limited")
    page.click("#f-apply")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("generate_invoice")
    page.goto(site.url + "/jobs?name=sync_calendar")
    expect(rows).to_have_count(1)
    page.goto(site.url + "/jobs?runner_type=temporal")
    expect(rows.first).to_contain_text("No jobs match")
    # pagination: ten per page, "Older" continues where the first page ended
    page.goto(site.url + "/jobs?limit=10")
    expect(rows).to_have_count(10)
    first = set(
        page.locator("#jobs-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    )
    page.click("#next-page")
    expect(page).to_have_url(re.compile(r"cursor="))
    expect(rows.first).to_be_visible()
    second = set(
        page.locator("#jobs-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    )
    assert second
    assert not first & second
    assert len(first | second) == everything


def test_failed_job_page_shows_traceback(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.url}/jobs/{T1}/{site.ids['invoice']}")
    expect(page.locator("h1 .badge")).to_have_text("failed")
    expect(page.locator("#error-message")).to_contain_text("upstream refused: rate limited")
    expect(page.locator("#traceback")).to_contain_text("Traceback (most recent call last)")
    expect(page.locator("#traceback")).to_contain_text("ValueError")
    steps = page.locator("#steps tbody tr")
    expect(steps).to_have_count(2)  # the step and the attempt
    expect(steps.nth(0)).to_contain_text("call upstream")
    expect(page.locator("#job-data")).to_contain_text('"invoice": 1001')
    expect(page.locator("#retry-button")).to_be_visible()
    expect(page.locator("#cancel-button")).to_have_count(0)
    shot(page, "job-failed")


def test_cancel_and_retry_from_the_page(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    # cancel the running job: dismissing the confirmation does nothing, accepting cancels
    page.goto(f"{site.url}/jobs/{T1}/{site.ids['slow']}")
    expect(page.locator("#progress-text")).to_contain_text("40%")
    shot(page, "job-running")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#cancel-button")
    assert site.status("slow") is JobStatus.PROCESSING
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    expect(page.locator("#notice")).to_have_text("The job was cancelled.")
    expect(page.locator("h1 .badge")).to_have_text("cancelled")
    assert site.status("slow") is JobStatus.CANCELLED

    # retry a failed job: it runs again on the worker (and fails again, a second attempt)
    page.goto(f"{site.url}/jobs/{T1}/{site.ids['to_retry']}")
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#retry-button")
    expect(page.locator("#notice")).to_have_text("The job was queued again.")
    assert "again" in messages[0]
    info = site.runner.wait_for_job(site.ids["to_retry"], tenant=T1, timeout=60)
    assert info.status is JobStatus.FAILED
    page.reload()
    expect(page.locator("#steps tbody tr", has_text="retry")).to_have_count(1)
    expect(page.locator("#steps tbody tr", has_text="attempt")).to_have_count(2)


def test_untrusted_text_is_never_executed(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.url}/jobs/{T1}/{site.ids['xss']}")
    expect(page.locator("#error-message")).to_contain_text("<script>window.__pwned = true</script>")
    expect(page.locator("#job-data")).to_contain_text("<img src=x onerror=")
    expect(page.locator("#job-metadata")).to_contain_text("<script>")
    assert page.locator("main script").count() == 0
    assert page.locator("main img").count() == 0
    shot(page, "job-untrusted-text")
    page.goto(f"{site.url}/jobs?q=pwned")  # the error column of the table
    expect(page.locator("#jobs-table")).to_contain_text("<script>")
    page.goto(f"{site.url}/")  # rows written by the overview's script
    expect(page.locator("#recent-jobs tbody tr").first).to_be_visible()
    page.wait_for_function("document.getElementById('live-indicator').dataset.updated")
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_tenant_view_shows_nothing_of_another_tenant(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    other = site.ids["other_tenant"]
    page.goto(f"{site.url}/t1/jobs?limit=200")
    table = page.locator("#jobs-table")
    expect(table).to_contain_text("generate_invoice")
    assert str(other)[-8:] not in table.inner_text()
    assert page.locator("#f-tenant").count() == 0  # no tenant filter in a tenant view
    page.goto(f"{site.url}/t1/jobs?q=tenant%20two")
    expect(page.locator("#jobs-table tbody tr").first).to_contain_text("No jobs match")
    for path in (f"/t1/jobs/{T2}/{other}", f"/t1/jobs/{T1}/{other}", f"/t1/api/jobs/{T2}/{other}"):
        response = page.goto(site.url + path)
        assert response is not None
        assert response.status == 404, path
    page.expected_404 = True  # the browser logs those 404s as console errors
    page.goto(f"{site.url}/t1/")
    expect(page.locator("[data-metric=failed]")).to_have_text("3")  # T1's only
    expect(page.locator(".scope")).to_contain_text(str(T1))
    # the admin view does show it
    response = page.goto(f"{site.url}/jobs/{T2}/{other}")
    assert response is not None
    assert response.status == 200


def test_phone_width(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    context.set_default_timeout(TIMEOUT)
    tab = context.new_page()
    try:
        for name, path in (
            ("phone-overview", "/"),
            ("phone-jobs", "/jobs"),
            ("phone-job", f"/jobs/{T1}/{site.ids['invoice']}"),
        ):
            tab.goto(site.url + path)
            expect(tab.locator("h1")).to_be_visible()
            if path == "/":
                tab.wait_for_function("document.getElementById('live-indicator').dataset.updated")
            # the page itself never scrolls sideways (wide tables scroll inside their box)
            overflow = tab.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, (path, overflow)
            shot(tab, name)
    finally:
        context.close()


def test_history_clearing(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.url}/t1/history")
    page.check("input[name=scope][value=finished]")
    page.fill("#older-than", "0")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#clear-button")
    expect(page.locator("#removed")).to_contain_text("Removed")
    assert site.status("email0") is None  # completed: gone
    assert site.status("invoice") is JobStatus.FAILED  # failures kept with "finished"
    assert site.status("parked") is JobStatus.QUEUED  # live: kept
    other = site.runner.get_job_status(site.ids["other_tenant"], tenant=T2)
    assert other is not None  # the tenant view cleared only its tenant


def test_dns_rebinding_host_is_refused(site: Site, browser: Any) -> None:
    """A page whose name is re-pointed at the dashboard's address (DNS rebinding) gets 400 on
    every route: Chromium resolves attacker.example to 127.0.0.1 here, as the attacker's DNS
    would, and sends ``Host: attacker.example``; localhost still works."""
    from .conftest import CHROMIUM_ARGS, _ensure_chromium

    port = site.url.rsplit(":", 1)[1]
    rebound = browser.browser_type.launch(
        executable_path=_ensure_chromium(),
        headless=True,
        args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP attacker.example 127.0.0.1"],
    )
    try:
        tab = rebound.new_context().new_page()
        tab.set_default_timeout(TIMEOUT)
        for path in ("/", "/jobs", "/api/jobs", "/t1/api/metrics", "/static/dashboard.css"):
            response = tab.goto(f"http://attacker.example:{port}{path}")
            assert response is not None
            assert response.status == 400, path
            assert "Invalid Host header" in tab.content()
        shot(tab, "host-refused", full=False)
        # the same browser, same server, by the machine's own name: served
        response = tab.goto(f"http://localhost:{port}/api/metrics")
        assert response is not None and response.status == 200
    finally:
        rebound.close()
