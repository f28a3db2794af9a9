"""The run's graph as an SVG: blueprint nodes in layers, coloured by their status.

A run of a code workflow (no blueprint nodes in its snapshot) has no graph:
``layout`` returns None and the page shows its steps from the timeline instead.
That is the seam where the workflow-as-code view goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Graph", "layout"]

WIDTH, HEIGHT, GAP_X, GAP_Y = 150, 44, 60, 24


@dataclass(frozen=True)
class Graph:
    """Boxes and edges, positioned."""

    width: int
    height: int
    boxes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


def layout(snapshot: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]) -> Graph | None:
    """Place each node in the layer of its longest path from a start node."""
    ids = [n["id"] for n in snapshot.get("nodes", []) if isinstance(n, dict) and "id" in n]
    if not ids:
        return None
    edges = [
        (e["source"], e["target"])
        for e in snapshot.get("edges", [])
        if isinstance(e, dict) and e.get("source") in ids and e.get("target") in ids
    ]
    depth = dict.fromkeys(ids, 0)
    for _ in ids:  # a DAG settles within len(ids) rounds
        for s, t in edges:
            depth[t] = max(depth[t], depth[s] + 1)
    rows: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for n in ids:
        d = depth[n]
        row = rows.get(d, 0)
        rows[d] = row + 1
        pos[n] = (20 + d * (WIDTH + GAP_X), 20 + row * (HEIGHT + GAP_Y))
    boxes = [
        {
            "id": n,
            "x": x,
            "y": y,
            "w": WIDTH,
            "h": HEIGHT,
            "status": str(nodes.get(n, {}).get("status", "not reached")),
        }
        for n, (x, y) in pos.items()
    ]
    lines = [
        {
            "x1": pos[s][0] + WIDTH,
            "y1": pos[s][1] + HEIGHT // 2,
            "x2": pos[t][0],
            "y2": pos[t][1] + HEIGHT // 2,
        }
        for s, t in edges
    ]
    width = 40 + (max(depth.values()) + 1) * (WIDTH + GAP_X)
    height = 40 + max(rows.values()) * (HEIGHT + GAP_Y)
    return Graph(width=width, height=height, boxes=boxes, edges=lines)
