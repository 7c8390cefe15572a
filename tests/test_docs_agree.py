"""The reference pages state what the code does (issue 13).

Everything compared here is read from the code at test time (argparse parsers, dataclass
defaults, function signatures), never copied into the test: change a default in the code and
this test names the page that still says the old one.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner import RetryPolicy
from jobrunner._config import Settings
from jobrunner._policy import DEFAULT_TIMEOUT
from jobrunner.backends.postgres._worker import WorkerSettings
from jobrunner.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"
CLI_MD = DOCS / "reference" / "cli.md"
CONFIGURATION_MD = DOCS / "reference" / "configuration.md"
API_MD = DOCS / "reference" / "api.md"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _number(value: float) -> str:
    """How the pages write a number: ``25``, ``0.002``, ``1000``."""
    return f"{value:g}"


# -- CLI -------------------------------------------------------------------------------------------
def _options(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction) and action.option_strings:
            yield path, action


CLI_OPTIONS = list(_options(build_parser(), ("jobrunner",)))


def _sections(text: str) -> dict[tuple[str, ...], str]:
    """``## `jobrunner jobs list` `` headings -> their text; ``()`` is the intro."""
    sections: dict[tuple[str, ...], str] = {}
    key: tuple[str, ...] = ()
    lines: list[str] = []
    for line in text.splitlines():
        heading = re.match(r"^## `([a-z -]+?)(?: [A-Z_ ]+)?`", line)
        if heading:
            sections[key] = "\n".join(lines)
            key, lines = tuple(heading[1].split()), []
        else:
            lines.append(line)
    sections[key] = "\n".join(lines)
    return sections


def _section_for(path: tuple[str, ...], sections: dict[tuple[str, ...], str]) -> str:
    """The most specific section documenting ``path`` (``jobrunner tenants`` covers
    ``jobrunner tenants grant``), plus the intro, which documents the shared options."""
    for size in range(len(path), 1, -1):
        if path[:size] in sections:
            return sections[path[:size]] + "\n" + sections[()]
    if path == ("jobrunner",):
        return sections[()]  # the global options
    raise AssertionError(f"docs/reference/cli.md has no section for `{' '.join(path)}`")


@pytest.mark.parametrize(
    ("path", "action"),
    CLI_OPTIONS,
    ids=[f"{' '.join(p)} {a.option_strings[-1]}" for p, a in CLI_OPTIONS],
)
def test_every_cli_option_is_in_the_cli_reference(
    path: tuple[str, ...], action: argparse.Action
) -> None:
    section = _section_for(path, _sections(_text(CLI_MD)))
    for option in action.option_strings:
        assert re.search(rf"`{re.escape(option)}[` ]", section), (
            f"`{' '.join(path)} {option}` is not in its section of docs/reference/cli.md"
        )


DEFAULT_STATED = [
    (p, a)
    for p, a in CLI_OPTIONS
    if isinstance(a.default, int | float | str)
    and not isinstance(a.default, bool)
    and a.default != ""
]


@pytest.mark.parametrize(
    ("path", "action"),
    DEFAULT_STATED,
    ids=[f"{' '.join(p)} {a.option_strings[-1]}" for p, a in DEFAULT_STATED],
)
def test_cli_defaults_are_the_documented_ones(
    path: tuple[str, ...], action: argparse.Action
) -> None:
    section = _section_for(path, _sections(_text(CLI_MD)))
    rows = [line for line in section.splitlines() if f"`{action.option_strings[0]}" in line]
    assert rows, action.option_strings
    default = action.default
    shown = _number(default) if isinstance(default, int | float) else str(default)
    assert any(re.search(rf"(?<![\d.]){re.escape(shown)}(?![\d.])", r) for r in rows), (
        f"{' '.join(path)} {action.option_strings[0]}: default {shown} not in {rows}"
    )


def test_worker_lease_default_is_the_code_default_everywhere() -> None:
    """One default lease: the CLI's ``--lease`` falls back to WorkerSettings.lease_seconds,
    and no page states another default lease."""
    lease = _number(WorkerSettings.lease_seconds)
    worker = _sections(_text(CLI_MD))[("jobrunner", "worker")]
    [row] = [line for line in worker.splitlines() if "`--lease" in line]
    assert f"default {lease}" in row, row
    pages = [*DOCS.rglob("*.md"), DOCS.parent / "README.md"]
    stated = re.compile(
        r"(?:\blease_seconds`?,?|\blease(?: length)?\b)[^.\n|]{0,40}?default (\d+(?:\.\d+)?)\b"
        r"|default lease[^.\n|]{0,20}?(\d+(?:\.\d+)?) ?s\b",
        re.IGNORECASE,
    )
    for page in pages:
        row = _table_rows(_text(page)).get("lease_seconds")
        if row is not None:  # a settings table: | `lease_seconds` | 25 s | ...
            assert re.match(rf"{re.escape(lease)}\b", row[1]), (page.name, row)
        for match in stated.finditer(_text(page)):
            value = match[1] or match[2]
            assert _number(float(value)) == lease, (
                f"{page.relative_to(DOCS.parent)}: {match[0]!r} (the code's default is {lease})"
            )


# -- configuration -------------------------------------------------------------------------------
def _table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by the first cell's backticked name(s)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            rows[name] = cells
    return rows


def test_worker_settings_defaults_are_in_the_configuration_reference() -> None:
    rows = _table_rows(_text(CONFIGURATION_MD).split("## Worker settings", 1)[1])
    for field in dataclasses.fields(WorkerSettings):
        assert field.name in rows, f"WorkerSettings.{field.name} has no row"
        stated = rows[field.name][1]
        default = field.default
        if isinstance(default, bool):
            assert stated.strip("`").lower() == str(default).lower(), (field.name, stated)
        elif isinstance(default, int | float):
            assert stated == _number(default), (field.name, stated, default)
        elif isinstance(default, tuple):
            assert default == () and stated, field.name  # "every queue of ..."
        elif default is None:
            assert stated and stated != "None", field.name  # a derived default, described


#: Settings fields -> the environment variable documented for them.
SETTINGS_VARIABLES = {
    "runner_type": "JOB_RUNNER_TYPE",
    "schema": "JOBRUNNER_SCHEMA",
    "auto_migrate": "JOBRUNNER_AUTO_MIGRATE",
    "require_registered": "JOBRUNNER_REQUIRE_REGISTERED",
    "fallback_to_postgres": "JOB_RUNNER_FALLBACK_TO_PGBOSS",
    "temporal_address": "TEMPORAL_ADDRESS",
    "temporal_namespace": "TEMPORAL_NAMESPACE",
    "temporal_task_queue": "TEMPORAL_JOB_TASK_QUEUE",
    "pool_max_size": "JOBRUNNER_POOL_SIZE",
}


def test_settings_defaults_are_in_the_configuration_reference() -> None:
    rows = _table_rows(_text(CONFIGURATION_MD))
    for name, variable in SETTINGS_VARIABLES.items():
        default = getattr(Settings(), name)
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert rows[variable][1] == f"`{shown}`", (variable, rows[variable][1], shown)
    for field in dataclasses.fields(Settings):
        assert field.name in SETTINGS_VARIABLES or field.name in (
            "database_url",
            "temporal_tls_cert",
            "temporal_tls_key",
            "temporal_tls_ca",
            "extra",
        ), f"Settings.{field.name}: add it to this test and to configuration.md"


# -- the API page --------------------------------------------------------------------------------
def _signature_defaults(text: str, call: str) -> dict[str, str]:
    match = re.search(rf"`{re.escape(call)}\((.*?)\)`", text, re.S)
    assert match, f"docs/reference/api.md does not show `{call}(...)` with its defaults"
    return dict(re.findall(r"(\w+)=([^,]+?)(?=,|$)", " ".join(match[1].split())))


def _code_default(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return repr(value)


def test_retry_policy_defaults_are_in_the_api_reference() -> None:
    stated = _signature_defaults(_text(API_MD), "RetryPolicy")
    policy = RetryPolicy()
    for field in dataclasses.fields(RetryPolicy):
        assert field.name in stated, f"RetryPolicy.{field.name} missing from api.md"
        declared = field.default if field.default is not dataclasses.MISSING else None
        if declared is None and field.default_factory is not dataclasses.MISSING:
            declared = field.default_factory()
        if declared is None:
            # derived from other fields (e.g. max_interval): the page says how, and the
            # derived default value is stated somewhere on it
            derived = getattr(policy, field.name)
            assert stated[field.name] == "None", (field.name, stated[field.name])
            assert _number(float(derived)) in _text(API_MD), (field.name, derived)
        else:
            assert stated[field.name] == _code_default(declared), (
                field.name,
                stated[field.name],
                declared,
            )


def test_handler_timeout_default_is_in_the_api_reference() -> None:
    stated = _signature_defaults(_text(API_MD), "job")
    assert stated["timeout"] == _number(DEFAULT_TIMEOUT), stated
    assert stated["queue"] == '"default"', stated


def test_dashboard_defaults_are_in_the_reference_pages() -> None:
    from jobrunner.dashboard import create_app

    parameters = inspect.signature(create_app).parameters
    monitoring = _text(DOCS / "monitoring.md")
    rows = _table_rows(monitoring)
    refresh = parameters["refresh_seconds"].default
    assert f"(default {_number(refresh)})" in rows["refresh_seconds"][1], rows["refresh_seconds"]
    for name in parameters:
        assert name in rows, f"create_app({name}=...) is not in docs/monitoring.md's table"
    dashboard = _sections(_text(CLI_MD))[("jobrunner", "dashboard")]
    cli = {a.dest: a.default for p, a in CLI_OPTIONS if p == ("jobrunner", "dashboard")}
    assert cli["refresh"] == refresh  # the CLI and the library agree...
    assert f"default {_number(refresh)}" in dashboard  # ...and the page says so
    assert f"default `{cli['host']}`" in dashboard
    assert f"default {cli['port']}" in dashboard


# -- errors named in the docs ----------------------------------------------------------------------
#: Not jobrunner's: Python's built-ins and Temporal's.
FOREIGN_ERRORS = {"ApplicationError"}


def test_every_error_the_docs_name_is_importable() -> None:
    """An error a page names in backticks is a built-in, Temporal's, or importable from
    ``jobrunner`` (``jobrunner.testing`` for the test helpers')."""
    import builtins

    import jobrunner
    import jobrunner.testing

    pages = [*DOCS.rglob("*.md"), DOCS.parent / "README.md"]
    named = {
        name
        for page in pages
        for name in re.findall(r"`(?:[a-z_]+\.)*([A-Z]\w*Error)`", _text(page))
    }
    assert {"InvalidArgumentError", "UnknownOptionError"} <= named
    for name in sorted(named - FOREIGN_ERRORS):
        if isinstance(getattr(builtins, name, None), type):
            continue
        if name == "CancelledError":
            continue  # asyncio's
        found = getattr(jobrunner, name, None) or getattr(jobrunner.testing, name, None)
        assert found is not None, f"`{name}` is named in the docs but not importable"


# -- every name the docs mention -------------------------------------------------------------------
#: Where a bare name on a page (`JobRunner`, `FakeClock`) is looked up: the public modules.
PUBLIC_MODULES = (
    "jobrunner",
    "jobrunner.testing",
    "jobrunner.compat",
    "jobrunner.backends.postgres",
    "jobrunner.backends.temporal",
    "jobrunner.observability",
    "jobrunner.prometheus",
    "jobrunner.contrib.django.testing",
)

#: Capitalised words in backticks that are not jobrunner's Python names, each with why.
NOT_JOBRUNNERS = {
    "APIRouter": "FastAPI's",
    "FastAPI": "FastAPI's",
    "HTTPException": "FastAPI's",
    "Mount": "Starlette's",
    "Starlette": "Starlette's",
    "TestClient": "Starlette's",
    "TrustedHostMiddleware": "Starlette's",
    "SynchronousOnlyOperation": "Django's",
    "StreamHandler": "logging's",
    "Event": "asyncio's",
    "CancelledError": "asyncio's",
    "ApplicationError": "Temporal's",
    "Priority": "Temporal's",
    "TemporalScheduledStartTime": "a Temporal search attribute",
    "Host": "an HTTP header",
    "Secure": "a cookie attribute",
    "LockRows": "a PostgreSQL plan node",
    "LeaseExpired": "an error type label the SQL writes into a step row, not a class",
    "Released": "an error type label the SQL writes into a step row, not a class",
    "E001": "a Django system check id",
    "E002": "a Django system check id",
}

_BARE = re.compile(r"`([A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*)(?:\([^`]*\))?`")
#: ``jobrunner.a.B`` with a capitalised part: a class, an error or a constant (lower-case dotted
#: names on the pages are mostly metric, span, logger and activity names, not Python).
_QUALIFIED = re.compile(
    r"`(jobrunner(?:\.[a-z_][a-z0-9_]*)*\.[A-Z][A-Za-z0-9_]*(?:\.[a-z_][A-Za-z0-9_]*)*)"
    r"(?:\([^`]*\))?`"
)


def _resolve(dotted: str) -> object:
    """``jobrunner.a.B.c`` -> the object, importing the longest module prefix."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def _pages() -> list[Path]:
    return [*DOCS.rglob("*.md"), DOCS.parent / "README.md"]


def test_every_name_the_docs_mention_exists() -> None:
    """A capitalised name in backticks is importable from a public module (or one of
    NOT_JOBRUNNERS, Python's built-ins); a dotted ``jobrunner.…`` name resolves as written."""
    import builtins
    import importlib

    modules = [importlib.import_module(name) for name in PUBLIC_MODULES]
    missing: list[str] = []
    for page in _pages():
        text = _text(page)
        where = page.relative_to(DOCS.parent)
        for name in sorted(set(_BARE.findall(text))):
            if name in NOT_JOBRUNNERS or hasattr(builtins, name):
                continue
            if not any(hasattr(module, name) for module in modules):
                missing.append(f"{where}: `{name}`")
        for dotted in sorted(set(_QUALIFIED.findall(text))):
            if any(part in NOT_JOBRUNNERS for part in dotted.split(".")):
                continue
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                missing.append(f"{where}: `{dotted}`")
    assert not missing, "named in the docs but not importable:\n" + "\n".join(missing)


def test_the_docs_name_check_can_fail() -> None:
    with pytest.raises(AttributeError):
        _resolve("jobrunner.NoSuchName")
    assert not hasattr(__import__("jobrunner"), "NoSuchName")
