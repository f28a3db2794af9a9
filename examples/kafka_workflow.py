"""kafka-workflow's two examples as flowbridge workflows, driven only by Kafka messages.

Ported from GitHub ``awto/kafka-workflow`` (``src/main/js/packages/``
``workflow-trip-booking-saga`` and ``workflow-ecommerce``; the expected message
sequences are its engine tests, ``src/test/java/.../EngineTest.java``). They
speak kafka-workflow's protocol: ``new:{json}`` (key = run id) starts one,
``{"ref": ID, "value": V}`` resumes ``await ctx.ref()``, ``{"ref": ID, "error": E}``
raises there. Each request to the outside is a record on a topic of its own
carrying the ref id a reply must name, as plain text (``raw=True``: kafka-workflow's
``W.output`` sends strings as they are). A run started by ``new:`` also answers on
``workflow-result`` (``JSON(result)``) or ``workflow-error`` (``JSON(str(error))``).

Timers are kafka-workflow's too: ``kw_timeout`` asks the scheduler topic
(``workflow-scheduler``, key ``<run>|{"ref":"<id>"}``, value the delay in ms,
``"0"`` to cancel) and awaits the ref the scheduler sends back, so a test can
fire it with a message. ``ctx.sleep`` is flowbridge's own durable timer.

Run with ``FLOWBRIDGE_APP=examples.kafka_workflow`` and start with
``FLOWBRIDGE_KW_WORKFLOW=kw-trip-booking-saga`` (or the ``flowbridge-workflow``
header on the ``new:`` record).
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowbridge import RefError, WorkflowContext, workflow

SCHEDULER = "workflow-scheduler"


class Timeout(Exception):
    """The booking window closed (kafka-workflow's ``throw "timeout"``)."""


async def kw_timeout(ctx: WorkflowContext, ms: int) -> None:
    """kafka-workflow's timer: ask the scheduler, await its ref; cancel it when cancelled."""
    ref = ctx.ref()
    key = f'{ctx.run_id}|{{"ref":"{ref.id}"}}'
    ctx.emit(SCHEDULER, str(ms), key=key, raw=True)
    try:
        await ref
    except asyncio.CancelledError:
        ctx.emit(SCHEDULER, "0", key=key, raw=True)
        raise


@workflow("kw-trip-booking-saga", version=1)
async def trip_booking(ctx: WorkflowContext, opts: Any) -> dict[str, Any]:
    """Reserve a car, a hotel and a flight within a time window; compensate on any failure."""
    opts = opts or {}
    booked: list[tuple[str, str]] = []

    async def reserve(kind: str) -> dict[str, str]:
        ref = ctx.ref()
        ctx.emit(f"saga-reserve-{kind}", ref.id, raw=True)  # the reply names the ref
        try:
            await ref
        except asyncio.CancelledError:
            ctx.emit(f"saga-cancel-{kind}", ref.id, raw=True)  # a pending one is withdrawn
            raise
        return {"id": ref.id}

    async def branch(kind: str) -> dict[str, str]:
        got = await reserve(kind)
        booked.append((kind, got["id"]))
        if kind == "hotel" and opts.get("throwAfterHotel"):
            raise RuntimeError("something is wrong")
        return got

    async def window() -> None:
        try:
            await kw_timeout(ctx, int(opts.get("timeoutMS", 1000)))
        except asyncio.CancelledError:
            return None
        raise Timeout("timeout")

    try:
        _, got = await ctx.race(
            booked=ctx.all(branch("car"), branch("hotel"), branch("flight")), expired=window()
        )
        car, hotel, flight = got
        return {"car": car, "hotel": hotel, "flight": flight}
    except (RefError, RuntimeError, Timeout, asyncio.CancelledError):
        # Confirmed reservations are cancelled in the order they were confirmed.
        for kind, ref_id in booked:
            ctx.emit(f"saga-cancel-{kind}", ref_id, raw=True)
        raise


@workflow("kw-ecommerce", version=1)
async def ecommerce(ctx: WorkflowContext, arg: Any) -> Any:
    """A shopping cart driven by signals on the ref ``main``, reminding an abandoned cart once."""
    timeout_ms = int((arg or {}).get("abandonedCartTimeoutMS", 10000))
    items: list[dict[str, Any]] = []
    email = ""
    abandoned = False
    while True:
        which, signal = await ctx.race(main=ctx.ref("main"), timer=kw_timeout(ctx, timeout_ms))
        if which == "timer":
            signal = {"type": "timeout"}
        kind = (signal or {}).get("type")
        if abandoned and kind != "timeout":
            abandoned = False
        if kind == "addToCart":
            item = dict(signal["item"])
            same = next((i for i in items if i["productId"] == item["productId"]), None)
            if same is not None:
                same["quantity"] += item["quantity"]
            else:
                items.append(item)
        elif kind == "removeFromCart":
            item = signal["item"]
            same = next((i for i in items if i["productId"] == item["productId"]), None)
            if same is not None:
                same["quantity"] -= item["quantity"]
                if same["quantity"] <= 0:
                    items.remove(same)
        elif kind == "timeout":
            if not email or abandoned:
                return "abondoned"  # sic: kafka-workflow's result value
            abandoned = True
            ctx.emit("ecommerce-reminder", email, raw=True)
        elif kind == "updateEmail":
            email = signal["email"]
        elif kind == "checkout":
            if not items:
                ctx.emit("checkoutError", "Must have items to check out!", raw=True)
            else:
                return {"items": items, "email": email}
        elif kind == "getCart":
            ctx.emit("getCart", {"items": items, "email": email})  # W.outputJSON
