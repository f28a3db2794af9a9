"""Checks of flowcraft's built-ins in a blueprint: loops, built-in params, batches.

Each returns the problems it finds as ``ValidationIssue`` (codes ``bad-loop``,
``bad-params``, ``bad-batch``); ``tasks.blueprint.validate`` runs them all.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from tasks.blueprint.issues import ValidationIssue, unknown_keys
from tasks.builtins import GATHER_USES, SCATTER_USES, builtin, builtin_names

if TYPE_CHECKING:
    from tasks.blueprint.model import Blueprint

__all__ = ["batch_issues", "builtin_issues", "loop_issues"]

BUILTIN_USES = builtin_names()


def loop_issues(bp: Blueprint) -> list[ValidationIssue]:
    """Loops run one pass per iteration: each must be entered through its controller only."""
    a = bp.analysis
    issues: list[ValidationIssue] = []

    def add(node: str, message: str) -> None:
        issues.append(ValidationIssue("bad-loop", f"loop {node!r}: {message}", node=node))

    for controller, loop in a.loops.items():
        if not loop.entries:
            add(
                controller,
                "has no 'continue' edge to the start of its body (an edge with "
                '"action": "continue")',
            )
            continue
        if not loop.ends:
            add(controller, "its body has no edge back to the loop-controller")
        inner = [n for n in loop.body if n in a.loops]
        if inner:
            add(controller, f"contains the loop {inner[0]!r}: nested loops are not supported yet")
        body = set(loop.body)
        for edge in bp.edges:
            if edge.target in body and edge.source not in body and edge.source != controller:
                add(
                    controller,
                    f"edge {edge.source!r} -> {edge.target!r} enters the loop's body from "
                    "outside; enter it through the loop-controller",
                )
            out_of_loop = edge.source in body or edge.source == controller
            leaves = edge.target not in body and edge.target != controller
            if out_of_loop and leaves and edge.target in a.join_nodes:
                add(
                    controller,
                    f"edge {edge.source!r} -> {edge.target!r} leaves the loop into a join; "
                    "leave it into a node of its own first",
                )
    return issues


def builtin_issues(bp: Blueprint) -> list[ValidationIssue]:
    """A built-in's params: only the ones it reads, each with a value it can use."""
    issues: list[ValidationIssue] = []
    for node in bp.nodes:
        special = builtin(node.uses)
        if special is None:
            continue
        label = f"node {node.id!r} ({node.uses})"
        known = tuple(special.params)
        for key, hint in unknown_keys(node.params, known):
            shown = hint if known else f"{node.uses} takes no params"
            message = f"{label}: unknown param {key!r} ({shown})"
            issues.append(ValidationIssue("bad-params", message, node=node.id))
        for problem in special.check(node.params):
            issues.append(ValidationIssue("bad-params", f"{label}: {problem}", node=node.id))
    return issues


def batch_issues(bp: Blueprint, known_uses: Collection[str] | None) -> list[ValidationIssue]:
    """A scatter leads to its gather, runs a registered worker; a gather follows one scatter."""
    a = bp.analysis
    issues: list[ValidationIssue] = []

    def add(node: str, message: str) -> None:
        issues.append(ValidationIssue("bad-batch", f"node {node!r}: {message}", node=node))

    scatters = [n for n in bp.nodes if n.uses == SCATTER_USES]
    for node in bp.nodes:
        if node.uses == GATHER_USES:
            preds = a.predecessors.get(node.id, ())
            if len(preds) != 1 or bp.node(preds[0]).uses != SCATTER_USES:
                add(node.id, "a batch-gather must have exactly one predecessor, its batch-scatter")
        if any(node.id.startswith(f"{s.id}[") for s in scatters):
            add(node.id, "this id is how the batch's items are named; choose another")
    for node in scatters:
        gathers = [
            e.target for e in a.successors.get(node.id, ()) if _uses(bp, e.target) == GATHER_USES
        ]
        named = node.params.get("gatherNodeId")
        if len(set(gathers)) != 1:
            add(node.id, "a batch-scatter must have an edge to exactly one batch-gather node")
        elif isinstance(named, str) and named != gathers[0]:
            add(
                node.id,
                f"params.gatherNodeId {named!r} is not the gather it leads to ({gathers[0]!r})",
            )
        worker = node.params.get("workerUsesKey")
        if isinstance(worker, str) and worker in BUILTIN_USES:
            add(
                node.id,
                f"params.workerUsesKey {worker!r} is a built-in; items run registered nodes",
            )
        elif isinstance(worker, str) and known_uses is not None and worker not in known_uses:
            registered = ", ".join(sorted(set(known_uses) - BUILTIN_USES))
            add(
                node.id,
                f"params.workerUsesKey {worker!r} is not registered (registered: {registered})",
            )
    return issues


def _uses(bp: Blueprint, node_id: str) -> str:
    try:
        return bp.node(node_id).uses
    except KeyError:
        return ""
