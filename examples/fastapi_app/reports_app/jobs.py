"""The handlers: importing this module registers them."""

from jobrunner import JobContext, RetryPolicy, job


@job("build-report", retry=RetryPolicy(max_attempts=3), timeout=60)
async def build_report(ctx: JobContext, data: dict) -> dict:
    rows = [n * n for n in range(data["size"])]
    await ctx.set_progress(50, "rows computed")
    async with ctx.step("summarise"):
        summary = {"rows": len(rows), "total": sum(rows)}
    return summary
