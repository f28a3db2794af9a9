"""The JSON shapes of runs that the CLI prints, clients read and the HTTP API serves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from state.protocol import StateStore
from state.records import HistoryEvent, NodeState, Run
from tasks.blueprint import Blueprint
from tasks.blueprint.analysis import LOOP_USES
from tasks.engine.inputs import INTERNAL_PREFIX, LOOP_KEY
from tasks.timefmt import iso_utc

__all__ = ["history_json", "run_json", "run_summary"]


def _node_json(r: NodeState) -> dict[str, Any]:
    return {"status": r.status, "attempts": r.attempts, "output": r.output, "error": r.error}


def run_json(store: StateStore, run: Run) -> dict[str, Any]:
    """``{"run_id","blueprint","version","status","input","output","error","nodes",...}``.

    Besides the nodes (at their first iteration), ``context`` is the run's final
    context, ``errors`` every node failure (flowcraft's result carries both), a
    loop's nodes list each pass under ``iterations``, and a child run names its
    ``parent``.
    """
    node_ids = [n["id"] for n in run.snapshot.get("nodes", []) if isinstance(n, dict)]
    recs = store.get_nodes(run.run_id, node_ids) if node_ids else {}
    context = store.get_context(run.run_id)
    passes = _iterations(store, run, context)
    failed = [(r, 0) for r in recs.values()] + [
        (r, it) for it, rows in sorted(passes.items()) for r in rows.values()
    ]
    errors = [
        {"node": r.node_id, "iteration": it, "message": r.error}
        for r, it in failed
        if r.status == "failed"
    ]
    if run.status == "failed" and run.error and run.error not in {e["message"] for e in errors}:
        errors.append({"node": None, "iteration": 0, "message": run.error})
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "blueprint": run.blueprint_id,
        "version": run.version,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "errors": errors,
        "context": {k: v for k, v in context.items() if not k.startswith(INTERNAL_PREFIX)},
        "nodes": {n: _node_json(r) for n in node_ids if (r := recs.get(n)) is not None},
        "created_at": iso_utc(run.created_at),
        "updated_at": iso_utc(run.updated_at),
    }
    if passes:
        looped = sorted({n for rows in passes.values() for n in rows} | set(_loop_nodes(run)))
        for _, rows in sorted(passes.items()):
            # A loop's node as it is now: its latest pass (every pass is under iterations).
            out["nodes"].update({n: _node_json(r) for n, r in rows.items()})
        out["iterations"] = {
            n: [
                {"iteration": it, **_node_json(rows[n])}
                for it, rows in sorted({0: recs, **passes}.items())
                if n in rows
            ]
            for n in looped
        }
    if run.parent is not None:
        out["parent"] = run.parent
    return out


def _loop_nodes(run: Run) -> list[str]:
    if not any(
        isinstance(n, dict) and n.get("uses") == LOOP_USES for n in run.snapshot.get("nodes", [])
    ):
        return []
    bp = Blueprint.from_dict(run.snapshot)
    return [n for c, loop in bp.analysis.loops.items() for n in (c, *loop.body)]


def _iterations(
    store: StateStore, run: Run, context: dict[str, Any]
) -> dict[int, dict[str, NodeState]]:
    """A loop's records at iterations 1 and up (nothing for a run without loops)."""
    ids = _loop_nodes(run)
    if not ids:
        return {}
    last = max(
        (v for k, v in context.items() if k.startswith(LOOP_KEY) and isinstance(v, int)),
        default=0,
    )
    # The controller may have started one more pass than it recorded.
    rows = {it: store.get_nodes(run.run_id, ids, it) for it in range(1, last + 2)}
    return {it: r for it, r in rows.items() if r}


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
