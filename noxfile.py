"""Developer and CI sessions. ``python dev.py SESSION`` runs them without a global nox.

Sessions pin no Python version: nox builds each session's virtualenv with the interpreter it
runs under (``dev.py`` runs nox with the ``python3`` you started it with, 3.11 or newer), so a
machine with only Python 3.12 or 3.13 runs every session instead of skipping them all.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = False
# A session whose interpreter is missing is an error, never a silent (green) skip.
nox.options.error_on_missing_interpreters = True

# Everything ruff checks and format-checks: the package, its tests, the example app, the
# benchmark and fault-injection suites and the developer scripts.
LINT_PATHS = ["src", "tests", "examples", "bench", "chaos", "noxfile.py", "dev.py"]


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real PostgreSQL, Temporal and Chromium, then lint and types.

    This is the README's test command and what CI runs.
    """
    _install(session)
    session.run("pytest", *(session.posargs or ["-q"]))
    if not session.posargs:
        session.notify("lint")
        session.notify("typecheck")
        session.notify("examples")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


# The example downstream apps under examples/, each with its own tests.
EXAMPLE_APPS = ("billing_app", "django_app", "fastapi_app")


@nox.session
def examples(session: nox.Session) -> None:
    """The example apps' own tests, each run the way its users run them.

    jobrunner is installed from a freshly built wheel (not editable, not the source tree) with
    the extras the apps use, then each app with its test dependencies, and pytest runs from
    inside each app's directory: billing_app (only the plugin and jobrunner.testing),
    django_app (jobrunner.contrib.django with pytest-django) and fastapi_app
    (jobrunner.contrib.asgi with FastAPI's test client). Arguments go to each pytest run.
    """
    session.install(".[testing,django,asgi]")
    session.install(*(f"./examples/{app}[test]" for app in EXAMPLE_APPS))
    session.install(
        "--no-deps", "--force-reinstall", ".", *(f"./examples/{app}" for app in EXAMPLE_APPS)
    )
    for app in EXAMPLE_APPS:
        with session.chdir(f"examples/{app}"):
            session.run(
                "python",
                "-c",
                "import jobrunner, sys; f = jobrunner.__file__; sys.exit(0 if 'site-packages' "
                "in f else f'jobrunner imported from {f}, not installed')",
            )
            session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    _install(session)
    session.run("mypy", "--strict", "src/jobrunner")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a worker on a private PostgreSQL runs the example app's jobs."""
    _install(session)
    session.run("python", "-m", "jobrunner.demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (docs/performance.md): full run writes bench/RESULTS.md.

    ``nox -s bench -- --smoke`` runs a few hundred jobs (what CI exercises via
    tests/test_bench_smoke.py); other arguments go to bench/run.py (``--only``, ``--dsn``).
    """
    _install(session)
    session.run("python", "bench/run.py", *session.posargs)
    if not session.posargs:  # the full run: the fairness figures of docs/fairness.md too
        session.run("python", "bench/fairness_bench.py")
    elif session.posargs == ["--smoke"]:
        session.run("python", "bench/fairness_bench.py", "--smoke")


@nox.session
def chaos(session: nox.Session) -> None:
    """The fault-injection suite, full form (docs/guarantees.md): kill -9, frozen worker,
    pg_terminate_backend, PostgreSQL restart, silent listener, SIGTERM; one JSON report per
    scenario, all of them in chaos/RESULTS.json. Bounded to 8 minutes; fails on any lost job
    or accepted fenced-off completion. ``nox -s chaos -- kill-9`` runs one scenario."""
    _install(session)
    args = session.posargs or ["--full", "--out", "chaos/RESULTS.json"]
    session.run("python", "-m", "chaos", "--time-limit", "480", *args)
