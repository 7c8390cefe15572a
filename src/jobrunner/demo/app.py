"""An example application's handlers, as a host app would write them."""

from __future__ import annotations

import asyncio
from typing import Any

from jobrunner import JobContext, RetryPolicy, job

#: Set by ``slow-report`` once it starts, so the demo cancels it mid-run rather than by timing.
SLOW_REPORT_STARTED = asyncio.Event()


@job("generate-invoice", timeout=300)
async def generate_invoice(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Renders an invoice in two recorded steps."""
    async with ctx.step("collect-lines") as step:
        lines = [{"sku": "support-hours", "qty": data.get("hours", 3)}]
        step.result = {"lines": len(lines)}
    await ctx.set_progress(50, "lines collected")
    async with ctx.step("render-pdf"):
        pdf = f"invoice-{data['cycle']}.pdf"
    await ctx.set_progress(100, "done")
    return {"pdf": pdf, "lines": lines}


@job("send-reminder")
def send_reminder(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A plain (sync) handler: runs in the worker's thread pool."""
    ctx.set_progress(100, "sent")
    return {"sent_to": data["user"]}


@job(
    "sync-crm",
    retry=RetryPolicy(
        max_attempts=3, initial_interval=0.2, backoff_coefficient=2.0, max_interval=1.0
    ),
)
async def sync_crm(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Fails on its first attempt (a flaky remote API), succeeds on the retry."""
    if ctx.attempt < 2:
        raise ConnectionError("CRM API timed out")
    return {"synced": data["account"], "attempt": ctx.attempt}


@job("slow-report", timeout=60)
async def slow_report(ctx: JobContext, data: dict[str, Any]) -> None:
    """Runs until cancelled."""
    SLOW_REPORT_STARTED.set()
    for pct in range(0, 100, 5):
        await ctx.set_progress(pct, "crunching")
        await asyncio.sleep(1)
