"""Blueprint validation: every problem found at once, each naming its node or edge.

``validate`` returns the issues; ``check`` raises ``BlueprintError`` listing
them. Issue codes are stable (tests and tools may match on them):

``no-nodes``, ``duplicate-node``, ``unknown-uses``, ``dangling-edge``, ``cycle``,
``no-start``, ``unreachable``, ``bad-config``, ``delay-too-long``,
``bad-fallback``, ``bad-join``, ``bad-quorum``, ``bad-condition``,
``bad-transform``, ``bad-loop``, ``bad-params``, ``bad-batch``; parsing adds
``bad-field``, ``unknown-key`` and ``unknown-config`` (see ``Blueprint.from_dict``).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Collection
from typing import TYPE_CHECKING

from tasks.blueprint.analysis import find_cycles
from tasks.blueprint.checks import batch_issues, builtin_issues, loop_issues
from tasks.blueprint.conditions import compile_condition
from tasks.blueprint.issues import ValidationIssue, unknown_keys
from tasks.builtins import builtin_names
from tasks.durations import format_duration
from tasks.errors import BlueprintError, ConditionError
from tasks.joins import join_strategies, join_strategy, option_keys

if TYPE_CHECKING:
    from tasks.blueprint.model import Blueprint, EdgeSpec, NodeSpec

__all__ = [
    "BUILTIN_USES",
    "JOIN_STRATEGIES",
    "ValidationIssue",
    "check",
    "node_config_issues",
    "unknown_keys",
    "validate",
]

#: ``uses`` names flowbridge implements itself; they are always known.
BUILTIN_USES = builtin_names()
#: The accepted ``joinStrategy`` values (``tasks.joins``), ``all`` being the default.
JOIN_STRATEGIES = join_strategies()


def _edge_name(edge: EdgeSpec) -> str:
    return f"edge {edge.source!r} -> {edge.target!r}"


def validate(
    bp: Blueprint,
    *,
    known_uses: Collection[str] | None = None,
    max_delay_s: float | None = None,
) -> list[ValidationIssue]:
    """Every problem with ``bp``; ``known_uses`` and ``max_delay_s`` enable those checks."""
    if not bp.nodes:
        return [ValidationIssue("no-nodes", f"blueprint {bp.id!r} has no nodes")]
    issues: list[ValidationIssue] = []
    counts = Counter(n.id for n in bp.nodes)
    for node_id, count in counts.items():
        if count > 1:
            issues.append(
                ValidationIssue(
                    "duplicate-node", f"node {node_id!r} is declared {count} times", node=node_id
                )
            )
    if known_uses is not None:
        issues.extend(_uses_issues(bp, known_uses))
    issues.extend(_edge_issues(bp))
    issues.extend(_graph_issues(bp))
    n_preds = {i: len(p) for i, p in bp.analysis.predecessors.items()}
    for node in bp.nodes:
        issues.extend(node_config_issues(node, predecessors=n_preds.get(node.id)))
        issues.extend(_fallback_issues(bp, node, counts))
        if max_delay_s is not None:
            issues.extend(_delay_issues(node, max_delay_s))
    issues.extend(_expression_issues(bp))
    issues.extend(loop_issues(bp))
    issues.extend(builtin_issues(bp))
    issues.extend(batch_issues(bp, known_uses))
    return issues


def check(
    bp: Blueprint,
    *,
    known_uses: Collection[str] | None = None,
    max_delay_s: float | None = None,
) -> None:
    """Raise ``BlueprintError`` listing every issue of ``bp``, if it has any."""
    issues = validate(bp, known_uses=known_uses, max_delay_s=max_delay_s)
    if issues:
        raise BlueprintError(f"blueprint {bp.id!r} is invalid", issues)


def node_config_issues(node: NodeSpec, *, predecessors: int | None = None) -> list[ValidationIssue]:
    """Problems with one node's own config; ``predecessors`` enables the quorum bound."""
    cfg = node.config
    label = f"node {node.id!r}"
    issues: list[ValidationIssue] = []

    def add(code: str, message: str) -> None:
        issues.append(ValidationIssue(code, f"{label}: {message}", node=node.id))

    if cfg.max_attempts < 1:
        add(
            "bad-config",
            f"maxRetries counts attempts in total (1: no retry), so it must be at least 1, "
            f"got {cfg.max_attempts}",
        )
    if not (cfg.retry_delay_s >= 0 and math.isfinite(cfg.retry_delay_s)):
        add("bad-config", f"retryDelay must be a non-negative duration, got {cfg.retry_delay_s}s")
    if cfg.timeout_s is not None and not (cfg.timeout_s > 0 and math.isfinite(cfg.timeout_s)):
        add("bad-config", f"timeout must be positive, got {cfg.timeout_s}s")
    try:
        strategy = join_strategy(cfg.join_strategy)
    except KeyError as exc:
        add("bad-join", str(exc.args[0]))
        strategy = None
    if strategy is not None:
        for code, message in strategy.check(cfg.join_options, predecessors):
            add(code, message)
        declared = {o.key for o in strategy.options}
        for key in cfg.join_options:
            if key in declared:
                continue
            option = option_keys()[key]
            owners = " or ".join(repr(n) for n in join_strategies() if key in _keys_of(n))
            add(
                option.issue,
                f"{key!r} is only used with joinStrategy {owners}, not {cfg.join_strategy!r}",
            )
    return issues


def _keys_of(strategy: str) -> set[str]:
    return {o.key for o in join_strategy(strategy).options}


def _uses_issues(bp: Blueprint, known_uses: Collection[str]) -> list[ValidationIssue]:
    known = BUILTIN_USES | set(known_uses)
    registered = ", ".join(sorted(known))
    return [
        ValidationIssue(
            "unknown-uses",
            f"node {n.id!r}: unknown uses {n.uses!r} (registered: {registered})",
            node=n.id,
        )
        for n in bp.nodes
        if n.uses not in known
    ]


def _edge_issues(bp: Blueprint) -> list[ValidationIssue]:
    ids = set(bp.node_ids)
    issues: list[ValidationIssue] = []
    for edge in bp.edges:
        pair = (edge.source, edge.target)
        missing = [
            f"{role} {name!r} is not a node"
            for role, name in (("source", edge.source), ("target", edge.target))
            if name not in ids
        ]
        if missing:
            message = f"{_edge_name(edge)}: {'; '.join(missing)}"
            issues.append(ValidationIssue("dangling-edge", message, edge=pair))
    return issues


def _graph_issues(bp: Blueprint) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    edges = {(e.source, e.target) for e in bp.edges}
    for path in find_cycles(bp):
        shown = path[0]
        for a, b in itertools.pairwise(path):
            shown += f" -> {b!s}" if (a, b) in edges else f" -[fallback]-> {b!s}"
        kind = "self-loop" if len(path) == 2 else "cycle"
        issues.append(
            ValidationIssue(
                "cycle",
                f"node {path[0]!r}: {kind} {shown} (a loop must go through a "
                "loop-controller node's 'continue' edge; remove an edge or fallback on the path, "
                "or add a loop-controller)",
                node=path[0],
                edge=(path[0], path[1]),
            )
        )
    analysis = bp.analysis
    if not analysis.start_nodes:
        issues.append(
            ValidationIssue(
                "no-start",
                f"blueprint {bp.id!r} has no start node (every node has an incoming edge)",
            )
        )
        return issues
    for node_id in dict.fromkeys(bp.node_ids):
        if node_id not in analysis.reachable:
            starts = ", ".join(analysis.start_nodes)
            issues.append(
                ValidationIssue(
                    "unreachable",
                    f"node {node_id!r} is unreachable from the start node(s) {starts}",
                    node=node_id,
                )
            )
    return issues


def _fallback_issues(bp: Blueprint, node: NodeSpec, counts: Counter[str]) -> list[ValidationIssue]:
    target = node.config.fallback
    if target is None:
        return []
    if target == node.id:
        problem = "is the node itself"
    elif target not in counts:
        problem = "is not a node in this blueprint"
    else:
        return []
    return [
        ValidationIssue(
            "bad-fallback", f"node {node.id!r}: fallback {target!r} {problem}", node=node.id
        )
    ]


def _delay_issues(node: NodeSpec, max_delay_s: float) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    limit = format_duration(max_delay_s)
    cfg = node.config
    for key, value in (("retryDelay", cfg.retry_delay_s), ("timeout", cfg.timeout_s)):
        if value is not None and value >= max_delay_s:
            issues.append(
                ValidationIssue(
                    "delay-too-long",
                    f"node {node.id!r}: {key} {format_duration(value)} is not below the limit "
                    f"of {limit} (half the broker's visibility timeout); longer waits must use "
                    "a sleep node, which sets a durable store timer",
                    node=node.id,
                )
            )
    return issues


#: A name with hyphens (``check-inventory``): a node id that an expression cannot name bare.
_HYPHENATED = re.compile(r"(?<![\w.'\"\[])[A-Za-z_]\w*(?:-\w+)+")


def _expression_issues(bp: Blueprint) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    ids = set(bp.node_ids)
    for edge in bp.edges:
        pair = (edge.source, edge.target)
        for key, code in (("condition", "bad-condition"), ("transform", "bad-transform")):
            expr = getattr(edge, key)
            if expr is None:
                continue
            try:
                compile_condition(expr)
            except ConditionError as exc:
                shown = expr if len(expr) <= 200 else expr[:200] + "..."
                message = f"{_edge_name(edge)}: {key} {shown!r} is invalid: {exc.problem}"
                issues.append(ValidationIssue(code, message, edge=pair))
                continue
            for name in _HYPHENATED.findall(expr):
                if name in ids:
                    issues.append(
                        ValidationIssue(
                            code,
                            f"{_edge_name(edge)}: {key} {expr!r} reads {name!r} as a "
                            f"subtraction; write context[{name!r}] to read that node's output",
                            edge=pair,
                        )
                    )
    return issues
