"""The soak test's blueprint (tests/e2e/test_soak.py): the hot path and nothing else.

``soak``: ``a`` -> ``b`` -> ``c``, each a ``soak-step`` that touches nothing outside flowbridge
(no Redis counter, no file), so what the soak measures is the bridge's and workers' own memory
and the store's size.
"""

from __future__ import annotations

import itertools
from typing import Any

from flowbridge import NodeContext, node, register_blueprint

#: Nodes of one ``soak`` run.
SOAK_NODES = ("a", "b", "c")


@node("soak-step")
def soak_step(ctx: NodeContext) -> dict[str, Any]:
    """Pass the run's number on, with the node that saw it."""
    data = ctx.input if isinstance(ctx.input, dict) else {}
    return {"i": data.get("i"), "node": ctx.node_id}


register_blueprint(
    {
        "id": "soak",
        "nodes": [{"id": n, "uses": "soak-step"} for n in SOAK_NODES],
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(SOAK_NODES)],
    }
)
