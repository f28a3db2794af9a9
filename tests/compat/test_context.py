"""flowcraft ``packages/core/test/context.test.ts`` (the context's ``has`` and ``delete``) and
``test/runtime/state.test.ts`` (what the result carries), as nodes of a run see them."""

from __future__ import annotations

from typing import Any

import pytest

from flowbridge import NodeContext
from tests.compat.helpers import bp, e, n, out, run, value


def test_has_and_delete_as_a_node_sees_them() -> None:
    """context.test.ts > ``has`` is whether a key is set; ``delete`` says whether it was."""

    def first(ctx: NodeContext) -> dict[str, Any]:
        seen = {"has_seed": ctx.context.has("seed"), "has_none": ctx.context.has("none")}
        seen["deleted_seed"] = ctx.context.delete("seed")
        seen["deleted_none"] = ctx.context.delete("none")
        seen["after"] = ctx.context.has("seed")
        ctx.context.set("made", 1)
        ctx.context.delete("made")
        seen["made"] = ctx.context.get("made", "gone")
        return seen

    def second(ctx: NodeContext) -> dict[str, Any]:
        return {"seed": ctx.context.has("seed"), "kept": ctx.context.get("kept")}

    result = run(
        {"first": first, "second": second},
        bp("ctx", [n("first"), n("second")], [e("first", "second")]),
        {"seed": 1, "kept": 2},
    )
    assert out(result, "first") == {
        "has_seed": True,
        "has_none": False,
        "deleted_seed": True,
        "deleted_none": False,
        "after": False,
        "made": "gone",
    }
    assert out(result, "second") == {"seed": False, "kept": 2}, "the delete was committed"
    assert result["context"] == {"kept": 2}


def test_a_failed_node_s_context_writes_and_deletes_are_not_committed() -> None:
    """context.test.ts (deltas): what a node staged is committed only with its completion."""

    def fails(ctx: NodeContext) -> None:
        ctx.context.set("half", True)
        ctx.context.delete("seed")
        raise RuntimeError("no")

    result = run({"A": fails}, bp("ctx", [n("A")]), {"seed": 1})
    assert result["status"] == "failed"
    assert result["context"] == {"seed": 1}


@pytest.mark.differs("namespaces")
def test_node_outputs_and_context_keys_are_apart() -> None:
    """state.test.ts (``addCompletedNode`` writes ``<id>`` into the context): in flowcraft a
    node called ``total`` overwrites the context key ``total``; in flowbridge node outputs and
    context keys are apart (expressions and ``inputs`` read a node id first)."""

    def total(ctx: NodeContext) -> int:
        return 99

    result = run(
        {
            "total": total,
            "reader": lambda ctx: {"key": ctx.context.get("total"), "node": ctx.input},
        },
        bp(
            "ns",
            [n("total"), n("reader", inputs="total")],
            [e("total", "reader", condition="total == 99")],
        ),
        {"total": 1},
    )
    assert result["context"]["total"] == 1
    assert out(result, "reader") == {"key": 1, "node": 99}


def test_the_result_carries_context_and_errors() -> None:
    """state.test.ts > ``toResult`` (status, context, errors)."""
    result = run({"A": value("a")}, bp("r", [n("A")]), {"x": 1})
    assert (result["status"], result["context"], result["errors"]) == ("completed", {"x": 1}, [])
