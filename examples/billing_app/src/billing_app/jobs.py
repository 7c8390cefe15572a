"""The application's job handlers, registered on jobrunner's default registry at import."""

from __future__ import annotations

from typing import Any

from jobrunner import JobContext, JobRunnerFactory, NonRetryable, RetryPolicy, job

from billing_app.gateway import CardDeclined, gateway

#: Sent e-mails (a real app would talk to an e-mail service).
OUTBOX: list[dict[str, Any]] = []


@job(
    "generate-invoice",
    retry=RetryPolicy(max_attempts=4, initial_interval=30, max_interval=600),
    timeout=120,
)
async def generate_invoice(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Price the lines, charge the customer, then enqueue the invoice e-mail."""
    lines = data.get("lines") or []
    if not lines:
        raise NonRetryable(f"no billable lines for {data['customer_id']} in {data['month']}")
    async with ctx.step("price") as step:
        total = sum(int(line["qty"]) * int(line["unit_cents"]) for line in lines)
        step.result = {"total_cents": total}
    await ctx.set_progress(50, "priced")
    async with ctx.step("charge") as step:
        try:
            charge_id = gateway.charge(data["customer_id"], total)
        except CardDeclined as exc:
            raise NonRetryable(str(exc)) from exc
        step.result = {"charge_id": charge_id}
    number = f"INV-{data['month']}-{data['customer_id']}"
    runner = await JobRunnerFactory.get_instance()
    await runner.schedule_job(
        "send-invoice-email",
        {"customer_id": data["customer_id"], "invoice": number, "total_cents": total},
        tenant=ctx.tenant,
        singleton_key=f"email:{number}",
    )
    return {"invoice": number, "total_cents": total, "charge_id": charge_id}


@job("send-invoice-email")
async def send_invoice_email(ctx: JobContext, data: dict[str, Any]) -> None:
    """Send the invoice e-mail."""
    OUTBOX.append({"kind": "invoice", **data})


@job("payment-reminders")
def payment_reminders(ctx: Any, data: dict[str, Any]) -> int:
    """A plain function: remind every customer with an open balance (runs in a thread)."""
    overdue = list(data.get("customers", []))
    for i, customer in enumerate(overdue, start=1):
        if ctx.is_cancelled():
            break
        OUTBOX.append({"kind": "reminder", "customer_id": customer})
        ctx.set_progress(100 * i // len(overdue))
    return len(overdue)
