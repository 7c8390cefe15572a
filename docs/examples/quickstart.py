"""The quickstart, runnable: ``JOBRUNNER_DATABASE_URL=postgresql://... python quickstart.py``."""

from __future__ import annotations

import asyncio
from typing import Any

from jobrunner import JobContext, JobRunnerFactory, RetryPolicy, job
from jobrunner.testing import running_worker

TENANT = "3b2a7c1e-5d4f-4e8a-9b6c-1a2b3c4d5e6f"


@job("generate-invoice", retry=RetryPolicy(max_attempts=3), timeout=300)
async def generate_invoice(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    await ctx.set_progress(50, "halfway")
    async with ctx.step("render-pdf"):
        pdf = f"invoice-{data['cycle']}.pdf"
    return {"pdf": pdf}


async def main() -> None:
    runner = await JobRunnerFactory.get_instance()
    async with running_worker(runner, concurrency=4):
        handle = await runner.schedule_job("generate-invoice", {"cycle": "c-1"}, tenant=TENANT)
        info = await runner.wait_for_job(handle.job_id, tenant=TENANT, timeout=30)
        print(info.status.value, info.result)
    await JobRunnerFactory.reset()


if __name__ == "__main__":
    asyncio.run(main())
