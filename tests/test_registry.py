"""The handler registry: decorator and seed styles, duplicates, defaults, intervals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jobrunner import (
    DuplicateHandlerError,
    HandlerNotFoundError,
    InvalidArgumentError,
    JobHandlerRegistry,
    RetryPolicy,
    job,
)


async def handler_a(ctx: Any, data: dict[str, Any]) -> None:
    return None


async def handler_b(ctx: Any, data: dict[str, Any]) -> None:
    return None


def sync_handler(ctx: Any, data: dict[str, Any]) -> None:
    return None


def test_decorator_registers_and_returns_function(registry: JobHandlerRegistry) -> None:
    @job(
        "generate-invoice",
        retry=RetryPolicy(max_attempts=5),
        timeout=600,
        queue="billing",
        registry=registry,
    )
    async def generate_invoice(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    spec = registry.get("generate-invoice")
    assert spec.handler is generate_invoice
    assert spec.retry.max_attempts == 5
    assert spec.timeout == 600.0
    assert spec.queue == "billing"
    assert spec.is_async
    assert "generate-invoice" in registry
    assert registry.names() == ["generate-invoice"]


def test_decorator_default_name(registry: JobHandlerRegistry) -> None:
    @job(registry=registry)
    def cleanup(ctx: Any, data: dict[str, Any]) -> None:
        return None

    spec = registry.get("cleanup")
    assert not spec.is_async


def test_seed_style_register_on_default_registry() -> None:
    default = JobHandlerRegistry.default()
    name = "test-registry-seed-style"
    try:
        spec = JobHandlerRegistry.register(
            name=name,
            handler=handler_a,
            retry=RetryPolicy(
                max_attempts=5, backoff_coefficient=2.0, initial_interval=1.0, max_interval=60.0
            ),
            timeout=timedelta(minutes=10),
        )
        assert default.get(name) is spec
        assert spec.timeout == 600.0
        assert spec.retry.max_interval == 60.0
    finally:
        default.remove(name)
    assert name not in default


def test_duplicate_different_handler_rejected(registry: JobHandlerRegistry) -> None:
    registry.add("x", handler_a)
    with pytest.raises(DuplicateHandlerError):
        registry.add("x", handler_b)
    assert registry.get("x").handler is handler_a


def test_same_handler_reregistered_ok(registry: JobHandlerRegistry) -> None:
    registry.add("x", handler_a, timeout=5)
    spec = registry.add("x", handler_a, timeout=7)
    assert registry.get("x") is spec
    assert spec.timeout == 7.0
    assert len(registry) == 1


def test_seconds_or_timedelta(registry: JobHandlerRegistry) -> None:
    a = registry.add(
        "a",
        handler_a,
        timeout=timedelta(seconds=90),
        retry=RetryPolicy(
            initial_interval=timedelta(milliseconds=500), max_interval=timedelta(minutes=2)
        ),
    )
    b = registry.add(
        "b", handler_b, timeout=90, retry=RetryPolicy(initial_interval=0.5, max_interval=120)
    )
    assert a.timeout == b.timeout == 90.0
    assert a.retry == b.retry
    assert a.retry.initial_seconds == 0.5 and a.retry.max_seconds == 120.0


def test_defaults_as_in_seed(registry: JobHandlerRegistry) -> None:
    spec = registry.add("d", sync_handler)
    assert spec.retry.max_attempts == 3
    assert spec.retry.backoff_coefficient == 2.0
    assert spec.retry.initial_seconds == 1.0
    assert spec.retry.max_seconds == 30.0
    assert spec.timeout == 300.0
    assert spec.queue == "default"
    assert RetryPolicy() == spec.retry


def test_unknown_name_lookup(registry: JobHandlerRegistry) -> None:
    with pytest.raises(HandlerNotFoundError, match="No handler registered for job: nope"):
        registry.get("nope")
    assert registry.find("nope") is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "handler": handler_a},
        {"name": 5, "handler": handler_a},
        {"name": "x" * 201, "handler": handler_a},
        {"name": "bad\nname", "handler": handler_a},
        {"name": "ok", "handler": "not callable"},
        {"name": "ok", "handler": handler_a, "timeout": 0},
        {"name": "ok", "handler": handler_a, "timeout": -1},
        {"name": "ok", "handler": handler_a, "timeout": "5"},
        {"name": "ok", "handler": handler_a, "retry": {"max_attempts": 3}},
        {"name": "ok", "handler": handler_a, "queue": ""},
    ],
)
def test_bad_registration(registry: JobHandlerRegistry, kwargs: dict[str, Any]) -> None:
    name = kwargs.pop("name")
    handler = kwargs.pop("handler")
    with pytest.raises(InvalidArgumentError):
        registry.add(name, handler, **kwargs)
    assert len(registry) == 0
