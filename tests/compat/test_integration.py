"""flowcraft ``packages/core/test/integration.test.ts``: order, registration, ETL,
compensation, debugging and decision-tree workflows (each ``it`` named), on flowbridge."""

from __future__ import annotations

import itertools
from typing import Any

from flowbridge import NodeContext, Result
from tests.compat.helpers import bp, e, n, out, run


def test_a_complete_order_workflow() -> None:
    """integration.test.ts > should process a complete order workflow."""

    def validate(ctx: NodeContext) -> dict[str, Any]:
        order = ctx.context.get("order")
        if not order["items"] or order["total"] <= 0:
            raise ValueError("invalid order")
        return {"valid": True}

    def check(ctx: NodeContext) -> Result:
        order = ctx.context.get("order")
        ok = all(
            ctx.context.get(f"inventory_{i['id']}", 0) >= i["quantity"] for i in order["items"]
        )
        return Result(output={"ok": ok}, action="inventory-ok" if ok else "inventory-issue")

    def pay(ctx: NodeContext) -> dict[str, Any]:
        ctx.context.set("payment_id", "pay_1")
        return {"paid": True}

    def update(ctx: NodeContext) -> dict[str, Any]:
        for item in ctx.context.get("order")["items"]:
            key = f"inventory_{item['id']}"
            ctx.context.set(key, ctx.context.get(key) - item["quantity"])
        return {"updated": True}

    result = run(
        {
            "validate-order": validate,
            "check-inventory": check,
            "process-payment": pay,
            "update-inventory": update,
            "send-confirmation": lambda ctx: {"sent": True},
        },
        bp(
            "order",
            [
                n(i)
                for i in (
                    "validate-order",
                    "check-inventory",
                    "process-payment",
                    "update-inventory",
                    "send-confirmation",
                )
            ],
            [
                e("validate-order", "check-inventory"),
                e("check-inventory", "process-payment", action="inventory-ok"),
                e("process-payment", "update-inventory"),
                e("update-inventory", "send-confirmation"),
                e("check-inventory", "send-confirmation", action="inventory-issue"),
            ],
        ),
        {
            "order": {
                "id": "order_123",
                "items": [{"id": "item1", "quantity": 2}, {"id": "item2", "quantity": 1}],
                "total": 40,
            },
            "inventory_item1": 10,
            "inventory_item2": 5,
        },
    )
    assert result["status"] == "completed", result
    assert out(result, "send-confirmation") is not None
    ctx = result["context"]
    assert ctx["payment_id"] and ctx["inventory_item1"] == 8 and ctx["inventory_item2"] == 4


def test_a_user_registration_workflow() -> None:
    """integration.test.ts > should handle complete user registration
    workflow."""

    def create(ctx: NodeContext) -> dict[str, Any]:
        user = ctx.context.get("user")
        ctx.context.set(f"user_{user['email']}", {"id": "u1", **user})
        ctx.context.set("current_user_id", "u1")
        return {"id": "u1"}

    def prefs(ctx: NodeContext) -> dict[str, Any]:
        ctx.context.set(f"prefs_{ctx.context.get('current_user_id')}", {"theme": "light"})
        return {"prefs": True}

    result = run(
        {
            "validate-user-data": lambda ctx: {"valid": "@" in ctx.context.get("user")["email"]},
            "check-user-exists": lambda ctx: Result(
                output={"exists": False},
                action="user-exists"
                if ctx.context.get(f"user_{ctx.context.get('user')['email']}")
                else "user-new",
            ),
            "create-account": create,
            "send-verification-email": lambda ctx: {"sent": True},
            "setup-preferences": prefs,
            "send-welcome-email": lambda ctx: {"welcomeSent": True},
            "handle-existing-user": lambda ctx: {"existing": True},
        },
        bp(
            "register",
            [
                n(i)
                for i in (
                    "validate-user-data",
                    "check-user-exists",
                    "create-account",
                    "send-verification-email",
                    "setup-preferences",
                    "send-welcome-email",
                    "handle-existing-user",
                )
            ],
            [
                e("validate-user-data", "check-user-exists"),
                e("check-user-exists", "create-account", action="user-new"),
                e("check-user-exists", "handle-existing-user", action="user-exists"),
                e("create-account", "send-verification-email"),
                e("create-account", "setup-preferences"),
                e("send-verification-email", "send-welcome-email"),
                e("setup-preferences", "send-welcome-email"),
            ],
        ),
        {"user": {"email": "test@example.com", "password": "securepassword123", "name": "T"}},
    )
    assert result["status"] == "completed", result
    uid = result["context"]["current_user_id"]
    assert out(result, "send-welcome-email") == {"welcomeSent": True}
    assert result["context"][f"prefs_{uid}"]


def test_an_etl_pipeline() -> None:
    """integration.test.ts > should process data through a complex ETL
    pipeline (two edges with different actions into one node)."""
    records = [
        {"id": 1, "age": 30},
        {"id": 2, "age": None},
        {"id": 3, "age": 40},
        {"id": 4, "age": 22},
    ]

    def validate(ctx: NodeContext) -> Result:
        valid = [r for r in ctx.input if r["age"] is not None]
        invalid = [r for r in ctx.input if r["age"] is None]
        ctx.context.set("valid_records", valid)
        ctx.context.set("invalid_records", invalid)
        return Result(
            output={"valid": valid, "invalid": invalid},
            action="has-invalid" if invalid else "all-valid",
        )

    def load(ctx: NodeContext) -> dict[str, Any]:
        ctx.context.set("processed_count", len(ctx.input))
        return {"loaded": len(ctx.input)}

    def report(ctx: NodeContext) -> dict[str, Any]:
        count = ctx.context.get("processed_count")
        return {
            "totalProcessed": count,
            "successRate": count / len(ctx.context.get("valid_records")),
        }

    result = run(
        {
            "extract-data": lambda ctx: records,
            "validate-data": validate,
            "transform-data": lambda ctx: [
                {**r, "adult": r["age"] >= 18} for r in ctx.input["valid"]
            ],
            "handle-invalid-data": lambda ctx: {"handled": len(ctx.input["invalid"])},
            "load-to-database": load,
            "generate-report": report,
        },
        bp(
            "etl",
            [
                n(i)
                for i in (
                    "extract-data",
                    "validate-data",
                    "transform-data",
                    "handle-invalid-data",
                    "load-to-database",
                    "generate-report",
                )
            ],
            [
                e("extract-data", "validate-data"),
                e("validate-data", "transform-data", action="all-valid"),
                e("validate-data", "transform-data", action="has-invalid"),
                e("validate-data", "handle-invalid-data", action="has-invalid"),
                e("transform-data", "load-to-database"),
                e("load-to-database", "generate-report"),
                e("handle-invalid-data", "generate-report"),
            ],
        ),
    )
    assert result["status"] == "completed", result
    assert result["context"]["processed_count"] == 3
    assert len(result["context"]["invalid_records"]) == 1
    assert out(result, "generate-report") == {"totalProcessed": 3, "successRate": 1.0}


def test_failures_and_compensation() -> None:
    """integration.test.ts > should handle failures and execute compensation
    logic."""

    def book(kind: str):  # type: ignore[no-untyped-def]
        def fn(ctx: NodeContext) -> dict[str, Any]:
            ctx.context.set(f"{kind}_booked", True)
            return {kind: "ok"}

        return fn

    def cancel(ctx: NodeContext) -> dict[str, Any]:
        ctx.context.set("flight_cancelled", True)
        ctx.context.set("hotel_cancelled", True)
        return {"compensation": True}

    result = run(
        {
            "book-flight": book("flight"),
            "book-hotel": book("hotel"),
            "book-car": lambda ctx: Result(action="failed"),
            "cancel-bookings": cancel,
            "process-payment": lambda ctx: ctx.context.set("payment_processed", True),
            "confirm-booking": lambda ctx: {"confirmed": True},
        },
        bp(
            "trip",
            [
                n(i)
                for i in (
                    "book-flight",
                    "book-hotel",
                    "book-car",
                    "cancel-bookings",
                    "process-payment",
                    "confirm-booking",
                )
            ],
            [
                e("book-flight", "book-hotel"),
                e("book-hotel", "book-car"),
                e("book-car", "cancel-bookings", action="failed"),
                e("book-car", "process-payment", action="success"),
                e("process-payment", "confirm-booking"),
            ],
        ),
    )
    ctx = result["context"]
    assert result["status"] == "completed", result
    assert (
        ctx["flight_booked"]
        and ctx["hotel_booked"]
        and ctx["flight_cancelled"]
        and ctx["hotel_cancelled"]
    )
    assert "payment_processed" not in ctx
    assert out(result, "cancel-bookings") == {"compensation": True}


def test_debugging_a_chain() -> None:
    """integration.test.ts > should support debugging complex workflow execution
    (the history stands for flowcraft's event logger)."""

    def step(delta: Any):  # type: ignore[no-untyped-def]
        def fn(ctx: NodeContext) -> dict[str, Any]:
            value = delta(ctx.input["value"])
            ctx.context.set("step", ctx.context.get("step") + 1)
            return {"value": value}

        return fn

    def init(ctx: NodeContext) -> dict[str, Any]:
        ctx.context.set("step", 1)
        return {"value": 0}

    def finalize(ctx: NodeContext) -> dict[str, Any]:
        ctx.context.set("finalValue", ctx.input["value"])
        ctx.context.set("finalStep", ctx.context.get("step"))
        return {"done": True}

    from tests.compat.helpers import runner

    ids = ["init", "process-1", "process-2", "process-3", "finalize"]
    r = runner(
        {
            "init": init,
            "process-1": step(lambda v: v + 10),
            "process-2": step(lambda v: v * 2),
            "process-3": step(lambda v: v - 5),
            "finalize": finalize,
        },
        bp("debug", [n(i) for i in ids], [e(a, b) for a, b in itertools.pairwise(ids)]),
    )
    result = r.run("debug", {})
    assert result["status"] == "completed"
    assert result["context"]["finalValue"] == 15
    assert result["context"]["finalStep"] == 4
    kinds = [h["kind"] for h in r.history(result["run_id"])]
    assert kinds[0] == "run.created" and kinds[-1] == "run.completed"
    assert kinds.count("node.completed") == 5


def test_a_decision_tree() -> None:
    """integration.test.ts > should handle complex decision trees and
    conditional routing."""

    def evaluate(ctx: NodeContext) -> Result:
        app = ctx.context.get("application")
        score = (
            app["experience"] * 10
            + len(app["skills"]) * 5
            + (5 if app["education"] == "bachelors" else 0)
        )
        action = "high-score" if score >= 80 else "medium-score" if score >= 50 else "low-score"
        return Result(output={"score": score}, action=action)

    result = run(
        {
            "evaluate-application": evaluate,
            "fast-track-interview": lambda ctx: "fast",
            "standard-interview": lambda ctx: "standard",
            "review-application": lambda ctx: "review",
            "technical-interview": lambda ctx: "tech",
            "phone-screen": lambda ctx: Result(output="screened", action="phone-pass"),
            "make-decision": lambda ctx: {"finalDecision": "hire"},
        },
        bp(
            "hire",
            [
                n(i)
                for i in (
                    "evaluate-application",
                    "fast-track-interview",
                    "standard-interview",
                    "review-application",
                    "technical-interview",
                    "phone-screen",
                    "make-decision",
                )
            ],
            [
                e("evaluate-application", "fast-track-interview", action="high-score"),
                e("evaluate-application", "standard-interview", action="medium-score"),
                e("evaluate-application", "review-application", action="low-score"),
                e("fast-track-interview", "technical-interview"),
                e("standard-interview", "phone-screen"),
                e("phone-screen", "make-decision", action="phone-pass"),
            ],
        ),
        {"application": {"experience": 4, "skills": ["a", "b", "c"], "education": "bachelors"}},
    )
    assert result["status"] == "completed", result
    assert out(result, "make-decision")["finalDecision"] in ("hire", "reject")
