"""The pytest plugin's fixtures in a downstream project, in pytest-asyncio strict and auto mode.

Strict mode is pytest-asyncio's default: an async fixture declared with a plain
``@pytest.fixture`` is not run there ("requested an async fixture ... with no plugin or hook
that handled it"), so the plugin must declare ``job_runner`` with ``pytest_asyncio.fixture``.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

DOWNSTREAM_TESTS = """
import asyncio

import pytest

from jobrunner import JobHandlerRegistry, JobStatus
from jobrunner.testing import adrain, assert_enqueued, drain


@pytest.fixture
def jobrunner_registry():
    registry = JobHandlerRegistry()
    registry.add("double", lambda ctx, data: data["n"] * 2)
    return registry


@pytest.mark.asyncio
async def test_job_runner_runs_a_job(job_runner):
    handle = await job_runner.schedule_job("double", {"n": 21})
    await adrain(job_runner)
    info = await job_runner.get_job_status(handle.job_id)
    assert info.status is JobStatus.COMPLETED
    assert info.result == 42


@pytest.mark.asyncio
async def test_memory_runner_in_an_async_test(memory_runner):
    handle = await memory_runner.schedule_job("double", {"n": 2})
    assert_enqueued(memory_runner, "double", {"n": 2})
    await adrain(memory_runner)
    info = await memory_runner.get_job_status(handle.job_id)
    assert info.result == 4


def test_memory_runner_in_a_sync_test(memory_runner):
    asyncio.run(memory_runner.schedule_job("double", {"n": 5}))
    assert drain(memory_runner) == 1
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_plugin_fixtures_work_in_a_downstream_project(
    pytester: pytest.Pytester, jobrunner_dsn: str, mode: str
) -> None:
    pytester.makeini(
        textwrap.dedent(
            f"""
            [pytest]
            asyncio_mode = {mode}
            asyncio_default_fixture_loop_scope = function
            """
        )
    )
    pytester.makepyfile(test_downstream=DOWNSTREAM_TESTS)
    result = pytester.runpytest_subprocess("-p", "asyncio", f"--jobrunner-dsn={jobrunner_dsn}")
    output = result.stdout.str() + result.stderr.str()
    assert "with no plugin or hook that handled it" not in output, output
    result.assert_outcomes(passed=3)


def test_strict_mode_is_the_default(pytester: pytest.Pytester, jobrunner_dsn: str) -> None:
    """No ``asyncio_mode`` configured at all: pytest-asyncio's default (strict) applies."""
    pytester.makepyfile(test_downstream=DOWNSTREAM_TESTS)
    result = pytester.runpytest_subprocess("-p", "asyncio", f"--jobrunner-dsn={jobrunner_dsn}")
    output = result.stdout.str() + result.stderr.str()
    assert "with no plugin or hook that handled it" not in output, output
    result.assert_outcomes(passed=3)
