"""The JSON shapes of runs that the CLI prints, clients read and the HTTP API serves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from state.protocol import StateStore
from state.records import HistoryEvent, Run
from tasks.timefmt import iso_utc

__all__ = ["history_json", "run_json", "run_summary"]


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


def run_summary(run: Run) -> dict[str, Any]:
    """One line of a runs list: id, blueprint, version, status, error, times."""
    return {
        "run_id": run.run_id,
        "blueprint": run.blueprint_id,
        "version": run.version,
        "status": run.status,
        "error": run.error,
        "created_at": iso_utc(run.created_at),
        "updated_at": iso_utc(run.updated_at),
    }


def history_json(events: Iterable[HistoryEvent]) -> list[dict[str, Any]]:
    """History events as JSON: time, kind, node, data, in commit order."""
    return [
        {"seq": e.seq, "at": iso_utc(e.at), "kind": e.kind, "node": e.node_id, "data": e.data}
        for e in events
    ]
