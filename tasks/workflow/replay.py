"""Replaying a run's recorded history against the code deployed now, outside any worker.

Before a deploy, replay the histories of live runs (``flowbridge replay RUN_ID``,
or files saved with ``--save`` from production) against the new code: a change
that would block those runs shows here as the activation and the command that
diverge, instead of as ``run.blocked`` after the deploy. Nothing is written:
replay only re-runs workflow code, never activities.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from state.protocol import StateStore
from tasks.workflow.api import WorkflowRegistry, workflows
from tasks.workflow.errors import NonDeterminismError
from tasks.workflow.history import Activation
from tasks.workflow.machine import Machine

__all__ = ["EXPORT_FORMAT", "ReplayReport", "export_history", "load_export", "replay"]

#: The ``format`` of an exported history (a file ``flowbridge replay`` reads).
EXPORT_FORMAT = "flowbridge.workflow-history/1"


@dataclass(frozen=True)
class ReplayReport:
    """What replaying one run's history against the current code found."""

    run_id: str
    workflow: str
    version: int
    gen: int
    activations: int
    ok: bool
    error: str | None = None
    activation: int | None = None
    expected: Any = None
    produced: Any = None

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (what ``flowbridge replay`` prints)."""
        return asdict(self)


def export_history(store: StateStore, run_id: str) -> dict[str, Any]:
    """A code workflow run's current generation as a self-contained JSON document.

    Raises:
        LookupError: no code workflow run has that id.
    """
    state = store.workflows.load(run_id)
    if state is None or state.run.snapshot.get("kind") != "workflow":
        raise LookupError(f"no code workflow run {run_id!r}")
    return {
        "format": EXPORT_FORMAT,
        "run_id": run_id,
        "workflow": state.run.snapshot.get("workflow"),
        "version": int(state.run.snapshot.get("version") or 1),
        "gen": state.gen,
        "history": list(state.history),
    }


def load_export(path: str | Path) -> dict[str, Any]:
    """Read an exported history, checking its shape.

    Raises:
        ValueError: the file is not an exported history (the message says why).
    """
    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{path}: not an exported workflow history (format {EXPORT_FORMAT!r}; "
            "write one with `flowbridge replay RUN_ID --save FILE`)"
        )
    missing = [k for k in ("run_id", "workflow", "version", "gen", "history") if k not in doc]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    return doc


def replay(doc: Mapping[str, Any], *, registry: WorkflowRegistry | None = None) -> ReplayReport:
    """Replay an exported history against the registered code; a divergence is reported."""
    reg = registry or workflows
    name, version = str(doc["workflow"]), int(doc["version"])
    history = [Activation.from_json(a) for a in doc["history"]]
    ok = ReplayReport(
        run_id=str(doc["run_id"]),
        workflow=name,
        version=version,
        gen=int(doc["gen"]),
        activations=len(history),
        ok=True,
    )
    defn = reg.get(name, version)
    if defn is None:
        known = ", ".join(reg.names()) or "none"
        return replace(
            ok,
            ok=False,
            error=f"workflow {name!r} version {version} is not registered "
            f"(FLOWBRIDGE_APP; registered: {known})",
        )
    machine = Machine(defn, run_id=ok.run_id, gen=ok.gen)
    try:
        machine.replay(history)
    except NonDeterminismError as exc:
        report = exc.report()
        return replace(
            ok,
            ok=False,
            error=report["error"],
            activation=report["activation"],
            expected=report["expected"],
            produced=report["produced"],
        )
    finally:
        machine.teardown()
    return ok
