"""How to unit-test your own workflow: the example order, in one process, no services.

Run with ``pytest examples/tests`` (``make test`` runs it too). The nodes are
the real ones from ``examples/shop.py``; ``Runner`` runs them on flowbridge's
engine with an in-memory store and a virtual clock.
"""

from __future__ import annotations

from pathlib import Path

import examples.shop  # noqa: F401 - registers the example's nodes
from flowbridge.testing import Runner
from tasks.blueprint import load_file
from tasks.registry import BlueprintRegistry

ORDER = Path(__file__).resolve().parent.parent / "blueprints" / "order.json"


def runner() -> Runner:
    blueprints = BlueprintRegistry()
    blueprints.register(load_file(ORDER))
    return Runner(blueprint_registry=blueprints)


def test_a_big_order_is_charged_and_shipped_express() -> None:
    r = runner()
    run = r.run("order", {"items": [{"sku": "tv", "price": 120}]})

    assert run["status"] == "completed"
    assert run["output"] == {"ship-express": {"shipped": True, "express": True}}
    assert run["nodes"]["charge"]["output"]["charged"] == 120
    assert r.emitted("shop.shipments") == [{"run_id": run["run_id"], "express": True}]


def test_an_empty_order_is_rejected() -> None:
    run = runner().run("order", {"items": []})

    assert run["status"] == "completed"
    assert run["output"] == {"reject": {"notified": True, "reason": "empty order"}}
    assert "charge" not in run["nodes"] or run["nodes"]["charge"]["status"] == "skipped"
