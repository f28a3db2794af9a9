"""Join blueprints of the fan-out scenario: loaded only where joins validate.

A separate module because a worker refuses to start when one of its
blueprints is invalid: while joins are not implemented, the other scenarios
must not depend on these.
"""

from __future__ import annotations

from typing import Any

from flowbridge import register_blueprint

__all__ = ["DIAMOND", "FANOUT_WIDTHS", "fan_out", "fan_out_id"]

#: Widths registered for the fan-out scenario (full and ``--quick``).
FANOUT_WIDTHS = (10, 20, 200, 1000)
DIAMOND = "bench.diamond"


def fan_out_id(width: int) -> str:
    """Blueprint id of the fan-out of ``width`` branches."""
    return f"bench.fan{width}"


def fan_out(blueprint_id: str, width: int) -> dict[str, Any]:
    """``src`` → ``width`` no-op branches → ``join`` (joinStrategy ``all``, the default)."""
    branches = [f"b{i:04d}" for i in range(width)]
    return {
        "id": blueprint_id,
        "nodes": [
            {"id": "src", "uses": "bench.noop"},
            *({"id": b, "uses": "bench.noop"} for b in branches),
            {"id": "join", "uses": "bench.noop", "config": {"joinStrategy": "all"}},
        ],
        "edges": [
            *({"source": "src", "target": b} for b in branches),
            *({"source": b, "target": "join"} for b in branches),
        ],
    }


register_blueprint(fan_out(DIAMOND, 2))
for _width in FANOUT_WIDTHS:
    register_blueprint(fan_out(fan_out_id(_width), _width))
