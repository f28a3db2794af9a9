"""The run as JSON, the shape the CLI prints and clients read."""

from __future__ import annotations

from typing import Any

from state.models import Run
from state.protocol import StateStore
from tasks.timefmt import iso_utc

__all__ = ["run_json"]


def run_json(store: StateStore, run: Run) -> dict[str, Any]:
    """``{"run_id","blueprint","version","status","input","output","error","nodes",...}``."""
    node_ids = [n["id"] for n in run.snapshot.get("nodes", []) if isinstance(n, dict)]
    recs = store.get_nodes(run.run_id, node_ids) if node_ids else {}
    return {
        "run_id": run.run_id,
        "blueprint": run.blueprint_id,
        "version": run.version,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "nodes": {
            n: {
                "status": r.status,
                "attempts": r.attempts,
                "output": r.output,
                "error": r.error,
            }
            for n in node_ids
            if (r := recs.get(n)) is not None
        },
        "created_at": iso_utc(run.created_at),
        "updated_at": iso_utc(run.updated_at),
    }
