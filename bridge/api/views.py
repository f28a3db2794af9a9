"""The JSON shapes of runs that the CLI prints, clients read and the HTTP API serves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from state.history import HistoryKind
from state.protocol import StateStore
from state.records import HistoryEvent, NodeState, NodeStatus, Run
from tasks.blueprint import Blueprint
from tasks.blueprint.analysis import LOOP_USES
from tasks.constants import INTERNAL_PREFIX, LOOP_KEY
from tasks.timefmt import iso_utc

__all__ = ["history_json", "run_json", "run_summary", "timeline", "waits_of"]


def waits_of(events: Iterable[HistoryEvent]) -> dict[str, dict[str, Any]]:
    """What each node last parked on: ``{node: {"event", "due_at"}}`` (from ``node.waiting``)."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.kind == HistoryKind.NODE_WAITING and e.node_id is not None:
            data = e.data if isinstance(e.data, dict) else {}
            due = data.get("due_at")
            out[e.node_id] = {
                "event": data.get("event"),
                "due_at": None if due is None else iso_utc(due),
            }
    return out


def _node_json(r: NodeState, waits: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {"status": r.status, "attempts": r.attempts, "output": r.output, "error": r.error}
    if r.status == NodeStatus.WAITING and waits is not None:
        out["waits"] = waits.get(r.node_id, {})
    if r.status == NodeStatus.RUNNING and r.claimed_by is not None and r.lease_until is not None:
        # Who runs the attempt and until when its lease holds (renewed while it runs).
        out["lease"] = {"by": r.claimed_by, "until": iso_utc(r.lease_until)}
    return out


def run_json(
    store: StateStore, run: Run, history: list[HistoryEvent] | None = None
) -> dict[str, Any]:
    """``{"run_id","blueprint","version","status","input","output","error","nodes",...}``.

    Besides the nodes (at their first iteration), ``context`` is the run's final
    context, ``errors`` every node failure (flowcraft's result carries both), a
    loop's nodes list each pass under ``iterations``, a child run names its
    ``parent``, and a waiting node says what it waits for (``waits``: event name,
    due time).
    """
    if run.snapshot.get("kind") == "workflow":
        return _workflow_json(store, run)
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
    parked = any(r.status == NodeStatus.WAITING for r in recs.values())
    waits = (
        waits_of(store.get_history(run.run_id) if history is None else history) if parked else {}
    )
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
        "nodes": {n: _node_json(r, waits) for n in node_ids if (r := recs.get(n)) is not None},
        "attempt": run.attempt,
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


def _workflow_json(store: StateStore, run: Run) -> dict[str, Any]:
    """A code workflow run: its durable steps keyed ``"<seq>:<name>"``, and a blocked report."""
    from tasks.workflow.history import Activation
    from tasks.workflow.steps import steps

    state = store.workflows.load(run.run_id)
    history = [Activation.from_json(a) for a in state.history] if state is not None else []
    return {
        "run_id": run.run_id,
        "kind": "workflow",
        "blueprint": run.blueprint_id,
        "version": run.version,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "nodes": steps(history, finished=run.terminal),
        "generation": state.gen if state is not None else 0,
        "activations": len(history),
        "blocked": state.blocked if state is not None else None,
        "attempt": run.attempt,
        "created_at": iso_utc(run.created_at),
        "updated_at": iso_utc(run.updated_at),
    }


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


def _attempt_of(data: Any) -> Any:
    return data.get("attempt") if isinstance(data, dict) else None


def _error_of(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in ("error", "reason"):
        if data.get(key):
            return str(data[key])
    return None


def timeline(events: Iterable[HistoryEvent]) -> list[dict[str, Any]]:
    """The history as a readable timeline: time, node, event, the node's attempt, error.

    ``run_attempt`` is the run's attempt each event belongs to (one more after each
    ``run.retried``).
    """
    rows: list[dict[str, Any]] = []
    run_attempt = 1
    for e in events:
        if e.kind == HistoryKind.RUN_RETRIED:
            run_attempt = _attempt_of(e.data) or run_attempt + 1
        data = e.data if isinstance(e.data, dict) else {}
        detail = {k: v for k, v in data.items() if k not in ("attempt", "error", "reason")}
        rows.append(
            {
                "at": iso_utc(e.at),
                "run_attempt": run_attempt,
                "node": e.node_id,
                "event": e.kind,
                # A node event's attempt is the node's; ``run.retried``'s the run's new one.
                "attempt": _attempt_of(e.data),
                "error": _error_of(e.data),
                "detail": detail or None,
            }
        )
    return rows
