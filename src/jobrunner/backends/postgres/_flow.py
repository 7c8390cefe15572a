"""Flow control for the PostgreSQL backend: fair claiming, limits, pauses and purges.

Everything lives in the database (migration 0004, queries in ``fairness.sql``), so every worker
on every host obeys the same rules and a change is seen by the next claim:

* Running attempts are counted from ``processing`` rows, never stored, so completion, failure,
  lease rescue, graceful release, cancellation and deletion all free capacity by themselves.
* Claims are fair between the tenants of a queue by default and take no lock beyond their
  rows; pauses and weights are read by every claim.
* While a concurrency or rate limit exists, claims (``claim_jobs_fair``) run under one
  transaction-level advisory lock per schema: two claimers can never both count the same
  free slot. The lock-free claim yields once ``flow_state.enabled`` is set or the rules
  changed, and the worker then re-reads the state, so a rule applies to every claim that
  starts after the change commits.

This module is the control side (the runner's ``flow``); the claiming side is
:mod:`jobrunner.backends.postgres._flow_gate`, inside the worker's store.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from jobrunner._errors import InvalidArgumentError
from jobrunner._runner import AllTenants, TenantArg
from jobrunner._validation import as_job_name, as_queue, as_tenant
from jobrunner.backends.postgres._flow_gate import flow_lock_key

if TYPE_CHECKING:
    from jobrunner._db._database import Database

__all__ = [
    "FlowControl",
    "FlowRule",
    "SyncFlowControl",
    "flow_metrics",
]

_MAX_LIMIT = 1_000_000


@dataclass(frozen=True)
class FlowRule:
    """The rules in force for one scope, with current usage.

    ``tenant`` ``None`` means every tenant (a rule on a job name); ``name`` ``None`` means every
    job name of the tenant.
    """

    tenant: uuid.UUID | None
    name: str | None
    max_running: int | None
    """Attempts of this scope running at once, across all workers; ``None`` for no limit."""
    rate_count: int | None
    """At most this many claims per ``rate_period`` seconds (sliding window)."""
    rate_period: float | None
    paused: bool
    weight: float | None
    """Share of a tenant in fair claiming (default 1)."""
    running: int = 0
    """Attempts of this scope running now."""
    rate_used: int | None = None
    """Claims inside the current rate window."""
    updated_at: datetime | None = None


def _scope(tenant: TenantArg | AllTenants, name: str | None) -> tuple[uuid.UUID | None, str | None]:
    tenant_id = None if isinstance(tenant, AllTenants) else as_tenant(tenant)
    job_name = None if name is None else as_job_name(name)
    if tenant_id is None and job_name is None:
        raise InvalidArgumentError(
            "a rule needs a tenant, a job name or both (ALL_TENANTS applies a name rule to all)"
        )
    return tenant_id, job_name


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_LIMIT:
        raise InvalidArgumentError(f"{what} must be an integer between 0 and {_MAX_LIMIT}")
    return value


def _period(value: object) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgumentError("per must be seconds or a timedelta")
    if not math.isfinite(seconds) or not 0.001 <= seconds <= 366 * 86400:
        raise InvalidArgumentError("per must be between 1 ms and 366 days")
    return seconds


def _rule(row: Mapping[str, Any]) -> FlowRule:
    return FlowRule(
        tenant=row["tenant"],
        name=row["name"],
        max_running=row["max_running"],
        rate_count=row["rate_count"],
        rate_period=row["rate_period"],
        paused=bool(row["paused"]),
        weight=row["weight"],
        running=int(row.get("running") or 0),
        rate_used=None if row.get("rate_used") is None else int(row["rate_used"]),
        updated_at=row.get("updated_at"),
    )


class FlowControl:
    """Run-time control of fairness and limits; get it from ``PostgresJobRunner.flow``.

    Every method applies at once to every worker of the schema (the next claim reads it) and
    wakes idle workers. Tenants follow the runner's convention: ``None`` is the system tenant,
    a UUID a tenant, and :data:`jobrunner.ALL_TENANTS` (rules only) every tenant.
    """

    def __init__(self, db: Database, ensure_started: Any = None) -> None:
        self._db = db
        self._ensure_started = ensure_started

    async def _start(self) -> None:
        if self._ensure_started is not None:
            await self._ensure_started()

    async def _change(
        self, tenant: uuid.UUID | None, name: str | None, **fields: Any
    ) -> FlowRule | None:
        """Read-modify-write one scope's rule under the flow lock; drop it once empty."""
        await self._start()
        q = self._db.queries
        key = {"tenant": tenant, "name": name}
        async with self._db.transaction() as conn:
            await conn.execute(q.flow_lock, {"key": flow_lock_key(self._db.schema)})
            cur = await conn.execute(q.flow_get_rule, key)
            row = await cur.fetchone()
            current: dict[str, Any] = (
                dict(row)
                if row
                else {
                    "tenant": tenant,
                    "name": name,
                    "max_running": None,
                    "rate_count": None,
                    "rate_period": None,
                    "paused": False,
                    "weight": None,
                }
            )
            current.update(fields)
            empty = (
                current["max_running"] is None
                and current["rate_count"] is None
                and not current["paused"]
                and current["weight"] is None
            )
            if empty:
                await conn.execute(q.flow_delete_rule, key)
            else:
                await conn.execute(
                    q.flow_save_rule,
                    {
                        k: current[k]
                        for k in (
                            "tenant",
                            "name",
                            "max_running",
                            "rate_count",
                            "rate_period",
                            "paused",
                            "weight",
                        )
                    },
                )
            await conn.execute(q.flow_refresh_state, {"fair": None})
            await conn.execute(q.flow_notify, {"channel": self._db.channel_jobs})
        return None if empty else _rule(current)

    async def set_concurrency_limit(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        name: str | None = None,
        limit: int | None,
    ) -> FlowRule | None:
        """Cap the attempts of a tenant, a job name, or a (tenant, name) pair running at once.

        Args:
            tenant: The tenant, or ``ALL_TENANTS`` with ``name`` for a limit on a job name
                across every tenant.
            name: The job name; ``None`` limits all of the tenant's jobs together.
            limit: Most attempts running at once across all workers; ``0`` holds the scope
                back like a pause; ``None`` removes the limit.

        Returns:
            The scope's rule, or ``None`` when nothing is left configured for it.
        """
        tenant_id, job_name = _scope(tenant, name)
        value = None if limit is None else _count(limit, "limit")
        return await self._change(tenant_id, job_name, max_running=value)

    async def set_rate_limit(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        name: str | None = None,
        count: int | None,
        per: timedelta | float = 1.0,
    ) -> FlowRule | None:
        """Allow at most ``count`` claims per ``per`` (a sliding window) for a scope.

        Args:
            tenant: The tenant, or ``ALL_TENANTS`` with ``name``.
            name: The job name; ``None`` rates all of the tenant's jobs together.
            count: Claims allowed in any window of length ``per``; ``None`` removes the limit.
            per: Window length (seconds or a timedelta).
        """
        tenant_id, job_name = _scope(tenant, name)
        if count is None:
            return await self._change(tenant_id, job_name, rate_count=None, rate_period=None)
        return await self._change(
            tenant_id, job_name, rate_count=_count(count, "count"), rate_period=_period(per)
        )

    async def set_tenant_weight(self, tenant: TenantArg, weight: float | None) -> FlowRule | None:
        """Give a tenant ``weight`` times the share of a weight-1 tenant (``None``: back to 1)."""
        tenant_id = as_tenant(tenant)
        if weight is not None and (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or not 0.001 <= weight <= 1000
        ):
            raise InvalidArgumentError("weight must be a number between 0.001 and 1000")
        return await self._change(tenant_id, None, weight=None if weight is None else float(weight))

    async def pause(
        self, *, tenant: TenantArg | AllTenants = None, name: str | None = None
    ) -> FlowRule | None:
        """Stop claiming a tenant's jobs, a job name's (``tenant=ALL_TENANTS``) or a pair's.

        Running attempts finish; queued jobs wait until :meth:`resume`.
        """
        tenant_id, job_name = _scope(tenant, name)
        return await self._change(tenant_id, job_name, paused=True)

    async def resume(
        self, *, tenant: TenantArg | AllTenants = None, name: str | None = None
    ) -> FlowRule | None:
        """Undo :meth:`pause` for the same scope."""
        tenant_id, job_name = _scope(tenant, name)
        return await self._change(tenant_id, job_name, paused=False)

    async def clear(
        self, *, tenant: TenantArg | AllTenants = None, name: str | None = None
    ) -> None:
        """Remove every rule of one scope."""
        tenant_id, job_name = _scope(tenant, name)
        await self._change(
            tenant_id,
            job_name,
            max_running=None,
            rate_count=None,
            rate_period=None,
            paused=False,
            weight=None,
        )

    async def set_fair_claiming(self, enabled: bool) -> None:
        """Switch fair claiming between the tenants of a queue on (the default) or off.

        Off, workers claim in priority order across tenants (``WorkerSettings.fair`` overrides
        this per worker). Concurrency and rate limits, pauses and weights apply either way.
        """
        if not isinstance(enabled, bool):
            raise InvalidArgumentError("enabled must be a boolean")
        await self._start()
        q = self._db.queries
        async with self._db.transaction() as conn:
            await conn.execute(q.flow_lock, {"key": flow_lock_key(self._db.schema)})
            await conn.execute(q.flow_refresh_state, {"fair": enabled})
            await conn.execute(q.flow_notify, {"channel": self._db.channel_jobs})

    async def purge_tenant(
        self, tenant: TenantArg, *, name: str | None = None, queue: str | None = None
    ) -> int:
        """Delete a tenant's queued jobs (pending, queued, retrying); running ones are kept.

        Args:
            tenant: Whose jobs.
            name: Only jobs of this name.
            queue: Only jobs in this queue.

        Returns:
            How many jobs were deleted.
        """
        params = {
            "tenant": as_tenant(tenant),
            "name": None if name is None else as_job_name(name),
            "queue": None if queue is None else as_queue(queue),
        }
        await self._start()
        async with self._db.connection() as conn:
            cur = await conn.execute(self._db.queries.flow_purge, params)
            row = await cur.fetchone()
        return int(row["purged"]) if row else 0

    async def get_limits(self, *, tenant: TenantArg | AllTenants = None) -> list[FlowRule]:
        """Rules in force with their usage: the tenant's own and those on job names.

        ``tenant=ALL_TENANTS`` lists every rule.
        """
        await self._start()
        all_tenants = isinstance(tenant, AllTenants)
        params = {
            "all_tenants": all_tenants,
            "tenant": None if all_tenants else as_tenant(tenant),
        }
        async with self._db.connection() as conn:
            cur = await conn.execute(self._db.queries.flow_list_rules, params)
            return [_rule(r) for r in await cur.fetchall()]

    async def metrics(self, *, tenant: TenantArg | AllTenants = None) -> dict[str, Any]:
        """Flow-control figures: state, rules with usage, per-tenant queued/running jobs."""
        await self._start()
        return await flow_metrics(self._db, tenant=tenant)


async def flow_metrics(db: Database, *, tenant: TenantArg | AllTenants = None) -> dict[str, Any]:
    """Flow-control figures for ``Metrics.extra["flow"]`` (a hook for the monitoring module).

    Returns a JSON-friendly dict: ``enabled``, ``fair``, ``version``, ``rules`` (one dict per
    rule with ``running`` and ``rate_used``) and ``tenants`` (queued, due, running, pass).
    """
    all_tenants = isinstance(tenant, AllTenants)
    params = {"all_tenants": all_tenants, "tenant": None if all_tenants else as_tenant(tenant)}
    async with db.connection() as conn:
        cur = await conn.execute(db.queries.flow_state)
        state = await cur.fetchone() or {"enabled": False, "fair": False, "version": 0}
        cur = await conn.execute(db.queries.flow_list_rules, params)
        rules = [_rule(r) for r in await cur.fetchall()]
        tenants: list[dict[str, Any]] = []
        if state["enabled"] or rules:  # per-tenant figures only matter (and cost a scan) then
            cur = await conn.execute(db.queries.flow_tenant_usage, params)
            tenants = list(await cur.fetchall())
    return {
        "enabled": bool(state["enabled"]),
        "fair": bool(state["fair"]),
        "version": int(state["version"]),
        "rules": [
            {
                "tenant": None if r.tenant is None else str(r.tenant),
                "name": r.name,
                "max_running": r.max_running,
                "running": r.running,
                "rate_count": r.rate_count,
                "rate_period": r.rate_period,
                "rate_used": r.rate_used,
                "paused": r.paused,
                "weight": r.weight,
            }
            for r in rules
        ],
        "tenants": {
            str(t["tenant"]): {
                "queued": int(t["queued"]),
                "due": int(t["due"]),
                "running": int(t["running"]),
                "pass": t["pass"],
            }
            for t in tenants
        },
    }


class SyncFlowControl:
    """Blocking twin of :class:`FlowControl` (``SyncJobRunner.flow``): same methods, same rules."""

    def __init__(self, flow: FlowControl, call: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._flow = flow
        self._call = call

    def set_concurrency_limit(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        name: str | None = None,
        limit: int | None,
    ) -> FlowRule | None:
        """See :meth:`FlowControl.set_concurrency_limit`."""
        return cast(
            FlowRule | None,
            self._call(self._flow.set_concurrency_limit(tenant=tenant, name=name, limit=limit)),
        )

    def set_rate_limit(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        name: str | None = None,
        count: int | None,
        per: timedelta | float = 1.0,
    ) -> FlowRule | None:
        """See :meth:`FlowControl.set_rate_limit`."""
        return cast(
            FlowRule | None,
            self._call(self._flow.set_rate_limit(tenant=tenant, name=name, count=count, per=per)),
        )

    def set_tenant_weight(self, tenant: TenantArg, weight: float | None) -> FlowRule | None:
        """See :meth:`FlowControl.set_tenant_weight`."""
        return cast(FlowRule | None, self._call(self._flow.set_tenant_weight(tenant, weight)))

    def pause(
        self, *, tenant: TenantArg | AllTenants = None, name: str | None = None
    ) -> FlowRule | None:
        """See :meth:`FlowControl.pause`."""
        return cast(FlowRule | None, self._call(self._flow.pause(tenant=tenant, name=name)))

    def resume(
        self, *, tenant: TenantArg | AllTenants = None, name: str | None = None
    ) -> FlowRule | None:
        """See :meth:`FlowControl.resume`."""
        return cast(FlowRule | None, self._call(self._flow.resume(tenant=tenant, name=name)))

    def clear(self, *, tenant: TenantArg | AllTenants = None, name: str | None = None) -> None:
        """See :meth:`FlowControl.clear`."""
        self._call(self._flow.clear(tenant=tenant, name=name))

    def set_fair_claiming(self, enabled: bool) -> None:
        """See :meth:`FlowControl.set_fair_claiming`."""
        self._call(self._flow.set_fair_claiming(enabled))

    def purge_tenant(
        self, tenant: TenantArg, *, name: str | None = None, queue: str | None = None
    ) -> int:
        """See :meth:`FlowControl.purge_tenant`."""
        return cast(int, self._call(self._flow.purge_tenant(tenant, name=name, queue=queue)))

    def get_limits(self, *, tenant: TenantArg | AllTenants = None) -> list[FlowRule]:
        """See :meth:`FlowControl.get_limits`."""
        return cast(list[FlowRule], self._call(self._flow.get_limits(tenant=tenant)))

    def metrics(self, *, tenant: TenantArg | AllTenants = None) -> dict[str, Any]:
        """See :meth:`FlowControl.metrics`."""
        return cast(dict[str, Any], self._call(self._flow.metrics(tenant=tenant)))
