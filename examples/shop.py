"""The example nodes that ``make dev`` runs: an order that is validated, charged and shipped."""

from __future__ import annotations

import asyncio
from typing import Any

from flowbridge import NodeContext, NodeError, Result, node


@node("validate-order")
def validate_order(ctx: NodeContext) -> Result:
    """Price the order; an empty one is rejected."""
    items: list[dict[str, Any]] = ctx.input.get("items", [])
    total = sum(float(i["price"]) * int(i.get("qty", 1)) for i in items)
    ctx.context.set("total", total)
    return Result(
        output={"total": total, "items": len(items)}, action="approved" if total > 0 else "rejected"
    )


@node("charge-card")
def charge_card(ctx: NodeContext) -> dict[str, Any]:
    """Charge the total; the idempotency key makes a payment provider charge once."""
    total = ctx.context.get("total")
    if total is None:
        raise NodeError("no total in the run context", retryable=False)
    return {"charged": total, "idempotency_key": ctx.idempotency_key}


@node("ship-order")
async def ship_order(ctx: NodeContext) -> dict[str, Any]:
    """Book a shipment (async nodes work too) and announce it on a user topic."""
    await asyncio.sleep(0.01)
    express = ctx.params.get("express", False)
    ctx.emit("shop.shipments", {"run_id": ctx.run_id, "express": express})
    return {"shipped": True, "express": express}


@node("notify-rejection")
def notify_rejection(ctx: NodeContext) -> dict[str, Any]:
    """Tell the customer the order was rejected."""
    return {"notified": True, "reason": "empty order"}
