"""jobrunner.contrib.django in a real Django project on PostgreSQL (pytest-django)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import User
from django.core.exceptions import SynchronousOnlyOperation
from django.core.management import call_command
from django.db import connection, transaction
from django.test import AsyncClient, Client, override_settings
from psycopg import sql

from jobrunner import ConfigurationError, InvalidArgumentError, JobStatus
from jobrunner._db._migrate import available_migrations
from jobrunner.contrib.django import aenqueue_on_commit, enqueue_on_commit, get_runner

from .conftest import PROJECT

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, seen by other connections

SHOP_TENANT = uuid.UUID("0b7e4c8a-52d1-4c8e-9a0e-7d5b1e6f2a10")


def _jobs_schema() -> str:
    from django.conf import settings

    return str(settings.JOBRUNNER["SCHEMA"])


def _order(order_id: int) -> Any:
    from djshop.models import Order

    return Order.objects.filter(pk=order_id).first()


def test_migrate_applied_jobrunner_migrations() -> None:
    with connection.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version")
            .format(sql.Identifier(_jobs_schema()))
            .as_string(None)
        )
        applied = [row[0] for row in cur.fetchall()]
    assert applied == [m.version for m in available_migrations()]


def test_committed_request_leaves_the_job_and_a_worker_runs_it(project_env: dict[str, str]) -> None:
    response = Client().post("/orders/", {"sku": "kettle"})
    assert response.status_code == 200
    body = response.json()
    runner = get_runner()
    info = runner.get_job_status(body["job_id"], tenant=SHOP_TENANT)
    assert info is not None
    assert info.status is JobStatus.QUEUED
    assert _order(body["order_id"]).confirmed is False

    worker = subprocess.Popen(
        [sys.executable, "manage.py", "jobrunner_worker", "--concurrency", "2", "--grace", "5"],
        cwd=PROJECT,
        env=project_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        done = runner.wait_for_job(body["job_id"], tenant=SHOP_TENANT, timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert done.status is JobStatus.COMPLETED, output
    assert done.result == {"confirmed": 1}
    assert _order(body["order_id"]).confirmed is True  # the handler used the ORM
    assert worker.returncode == 0, output
    assert "djshop-confirm-order" in output  # the banner lists the discovered handlers


def test_exception_in_atomic_request_rolls_the_job_back() -> None:
    tenant = uuid.uuid4()
    client = Client(raise_request_exception=False)
    response = client.post("/orders/", {"sku": "toaster", "fail": "exception", "tenant": tenant})
    assert response.status_code == 500
    assert get_runner().list_jobs(tenant=tenant).jobs == []
    from djshop.models import Order

    assert not Order.objects.filter(sku="toaster").exists()


def test_set_rollback_leaves_no_job() -> None:
    response = Client().post("/orders/", {"sku": "mug", "fail": "rollback"})
    body = response.json()
    assert get_runner().get_job_status(body["job_id"], tenant=SHOP_TENANT) is None
    assert _order(body["order_id"]) is None


def test_savepoint_rollback_removes_only_the_inner_job() -> None:
    with transaction.atomic():
        outer = enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
        try:
            with transaction.atomic():
                inner = enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
                raise ValueError("undo the inner block")
        except ValueError:
            pass
    runner = get_runner()
    assert runner.get_job_status(outer.job_id, tenant=SHOP_TENANT) is not None
    assert runner.get_job_status(inner.job_id, tenant=SHOP_TENANT) is None


def test_a_failed_enqueue_leaves_the_transaction_usable() -> None:
    from djshop.models import Order

    with transaction.atomic():
        Order.objects.create(sku="lamp")
        with pytest.raises(InvalidArgumentError):
            enqueue_on_commit("djshop-ping", {}, tenant="not-a-uuid")
        with pytest.raises(InvalidArgumentError):
            enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT, priority="high")
        Order.objects.create(sku="lamp")
    assert Order.objects.filter(sku="lamp").count() == 2


def test_run_at_schedules_for_later() -> None:
    from datetime import UTC, datetime, timedelta

    handle = enqueue_on_commit(
        "djshop-ping", {}, tenant=SHOP_TENANT, run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    info = get_runner().get_job_status(handle.job_id, tenant=SHOP_TENANT)
    assert info is not None
    assert info.status is JobStatus.PENDING


async def test_async_view_commits_and_rolls_back() -> None:
    client = AsyncClient()
    committed = (await client.post("/orders/async/", {"sku": "fan"})).json()
    rolled_back = (await client.post("/orders/async/", {"sku": "fan", "fail": "rollback"})).json()

    def status(job_id: str) -> Any:
        return get_runner().get_job_status(job_id, tenant=SHOP_TENANT)

    from asgiref.sync import sync_to_async

    assert (await sync_to_async(status)(committed["job_id"])).status is JobStatus.QUEUED
    assert await sync_to_async(status)(rolled_back["job_id"]) is None


async def test_aenqueue_on_commit_from_an_async_view() -> None:
    from asgiref.sync import sync_to_async

    body = (await AsyncClient().post("/ping/async/")).json()
    info = await sync_to_async(get_runner().get_job_status)(body["job_id"], tenant=SHOP_TENANT)
    assert info is not None
    assert info.name == "djshop-ping"


async def test_sync_enqueue_from_async_code_is_refused_with_a_pointer() -> None:
    with pytest.raises(SynchronousOnlyOperation):
        enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
    handle = await aenqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
    assert handle.created


# -- the dashboard ------------------------------------------------------------------------------
@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("clerk", is_staff=True))
    return client


def test_dashboard_requires_login_and_staff() -> None:
    anonymous = Client()
    page = anonymous.get("/admin/jobs/")
    assert page.status_code == 302
    assert page["Location"] == "/login/?next=/admin/jobs/"
    assert anonymous.get("/admin/jobs/api/jobs").status_code == 401
    assert anonymous.get("/admin/jobs/", HTTP_HOST="attacker.example").status_code == 400
    customer = Client()
    customer.force_login(User.objects.create_user("customer"))
    assert customer.get("/admin/jobs/").status_code == 403


def test_dashboard_shows_the_users_tenant_and_acts(staff_client: Client) -> None:
    mine = enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
    other_tenant = uuid.uuid4()
    theirs = enqueue_on_commit("djshop-ping", {}, tenant=other_tenant)

    overview = staff_client.get("/admin/jobs/")
    assert overview.status_code == 200, overview.content
    assert 'href="/admin/jobs/jobs"' in overview.content.decode()
    assert overview["Content-Security-Policy"]
    css = staff_client.get("/admin/jobs/static/dashboard.css")
    assert css.status_code == 200
    assert css["Content-Type"].startswith("text/css")

    listed = staff_client.get("/admin/jobs/api/jobs").json()
    ids = {j["job_id"] for j in listed["jobs"]}
    assert str(mine.job_id) in ids
    assert str(theirs.job_id) not in ids  # staff see the shop's tenant only
    assert staff_client.get(f"/admin/jobs/jobs/{other_tenant}/{theirs.job_id}").status_code == 404

    page = staff_client.get(f"/admin/jobs/jobs/{SHOP_TENANT}/{mine.job_id}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.content.decode())
    assert token is not None
    assert "jobrunner_csrf" in staff_client.cookies
    refused = staff_client.post(
        f"/admin/jobs/jobs/{SHOP_TENANT}/{mine.job_id}/cancel", {"csrf_token": "forged"}
    )
    assert refused.status_code == 403
    cancelled = staff_client.post(
        f"/admin/jobs/jobs/{SHOP_TENANT}/{mine.job_id}/cancel", {"csrf_token": token[1]}
    )
    assert cancelled.status_code == 303
    info = get_runner().get_job_status(mine.job_id, tenant=SHOP_TENANT)
    assert info is not None
    assert info.status is JobStatus.CANCELLED
    assert info.metadata.get("cancelled_by") == "clerk"


def test_superusers_see_every_tenant() -> None:
    theirs = enqueue_on_commit("djshop-ping", {}, tenant=uuid.uuid4())
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", is_staff=True))
    ids = {j["job_id"] for j in admin.get("/admin/jobs/api/jobs").json()["jobs"]}
    assert str(theirs.job_id) in ids


def test_read_only_setting_hides_actions(staff_client: Client, settings: Any) -> None:
    settings.JOBRUNNER = {**settings.JOBRUNNER, "DASHBOARD": {"READ_ONLY": True}}
    job = enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
    page = staff_client.get(f"/admin/jobs/jobs/{SHOP_TENANT}/{job.job_id}")
    assert page.status_code == 200
    assert "/cancel" not in page.content.decode()


# -- commands, settings, checks -----------------------------------------------------------------
def test_worker_command_takes_the_flags_of_jobrunner_worker() -> None:
    from jobrunner.cli import build_parser
    from jobrunner.contrib.django.management.commands.jobrunner_worker import Command

    cli = build_parser()
    sub = next(a for a in cli._actions if isinstance(a, argparse._SubParsersAction))
    expected = {o for a in sub.choices["worker"]._actions for o in a.option_strings}
    ours = {
        o
        for a in Command().create_parser("manage.py", "jobrunner_worker")._actions
        for o in a.option_strings
    }
    assert expected <= ours
    assert "--app" in ours  # optional here: the installed apps' jobs modules are discovered


def test_jobrunner_command_runs_the_cli_on_the_projects_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
    call_command("jobrunner", "jobs", "list", "--tenant", str(SHOP_TENANT), "--json")
    listed = json.loads(capsys.readouterr().out)
    assert str(job.job_id) in json.dumps(listed)


def test_jobrunner_command_through_manage_py(project_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "jobrunner", "-v", "metrics", "--all-tenants", "--json"],
        cwd=PROJECT,
        env=project_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "by_status" in done.stdout


def test_manage_py_test_with_the_discover_runner_drops_its_database(
    project_env: dict[str, str], jobrunner_dsn: str
) -> None:
    name = f"test_jrproject_{uuid.uuid4().hex[:8]}"
    env = dict(project_env, JR_DJANGO_SCHEMA="public", JR_DJANGO_TEST_DATABASE=name)
    done = subprocess.run(
        [sys.executable, "manage.py", "test", "djshop", "--noinput", "-v", "1"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Ran 1 test" in output
    # Dropped: the runner's connections to it were closed first.
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if left is not None:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    assert left is None, output


def test_post_migrate_applies_jobrunner_migrations_to_a_new_schema(settings: Any) -> None:
    fresh = f"jrdj_{uuid.uuid4().hex[:10]}"
    settings.JOBRUNNER = {**settings.JOBRUNNER, "SCHEMA": fresh}
    try:
        # 0001_initial is recorded already: what runs is the post_migrate step that
        # brings a schema up to a newer jobrunner's migrations.
        call_command("migrate", "jobrunner", verbosity=0)
        with connection.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT count(*) FROM {}.schema_migrations")
                .format(sql.Identifier(fresh))
                .as_string(None)
            )
            assert cur.fetchone()[0] == len(available_migrations())
    finally:
        with connection.cursor() as cur:
            cur.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                .format(sql.Identifier(fresh))
                .as_string(None)
            )


@pytest.mark.parametrize(
    ("jobrunner_setting", "message"),
    [
        ({"SCHEMAS": "x"}, "unknown keys"),
        ({"DATABASE": "replica"}, "not in settings.DATABASES"),
        ({"RUNNER_TYPE": "celery"}, "RUNNER_TYPE"),
        ({"AUTO_MIGRATE": "yes"}, "AUTO_MIGRATE"),
        ({"POOL_SIZE": 0}, "POOL_SIZE"),
        ({"DASHBOARD": {"TENANT": "nowhere.tenant_of"}}, "cannot be imported"),
        ({"TEMPORAL": {"ADRESS": "x"}}, "unknown keys"),
    ],
)
def test_bad_settings_are_named_by_the_system_check_and_the_api(
    jobrunner_setting: dict[str, Any], message: str
) -> None:
    from django.core.checks import run_checks

    with override_settings(JOBRUNNER=jobrunner_setting):
        errors = [e for e in run_checks() if e.id == "jobrunner.E001"]
        assert len(errors) == 1
        assert message in errors[0].msg
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)


def test_enqueue_through_a_missing_alias_changes_nothing() -> None:
    before = get_runner().list_jobs(tenant=SHOP_TENANT, limit=500).jobs
    with pytest.raises(InvalidArgumentError, match="replica"):
        enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT, using="replica")
    assert len(get_runner().list_jobs(tenant=SHOP_TENANT, limit=500).jobs) == len(before)


def test_the_job_is_visible_to_other_connections_only_after_commit(jobrunner_dsn: str) -> None:
    table = sql.SQL("SELECT count(*) FROM {}.jobs WHERE job_id = %s").format(
        sql.Identifier(_jobs_schema())
    )
    with psycopg.connect(jobrunner_dsn, autocommit=True) as observer:
        with transaction.atomic():
            handle = enqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
            assert observer.execute(table, (handle.job_id,)).fetchone() == (0,)
        assert observer.execute(table, (handle.job_id,)).fetchone() == (1,)
