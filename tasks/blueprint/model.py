"""Blueprints as immutable values: nodes, edges and their config, in flowcraft's JSON shape.

``Blueprint.from_dict`` parses flowcraft's format (``tasks.blueprint.parse``) and
reports every structural problem at once (``bad-field``, ``unknown-key``,
``unknown-config`` and each node's own config checks); graph checks are
``validate``'s. Durations are float seconds here and
milliseconds in the JSON. ``params`` and ``metadata`` are plain dicts (copied
on parse, so JSON-serialisable); treat them as read-only.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.blueprint.analysis import Analysis, analyze
from tasks.blueprint.validate import ValidationIssue
from tasks.errors import BlueprintError
from tasks.joins import DEFAULT_JOIN

__all__ = ["Blueprint", "EdgeSpec", "NodeConfig", "NodeInputs", "NodeSpec"]

#: A node's ``inputs``: a node id or context key, or ``{key: node id or context key}``.
NodeInputs = str | Mapping[str, str] | None


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """How a node is retried, timed out, replaced on failure and joined."""

    #: ``maxRetries`` in the JSON: attempts in total, as in flowcraft (1: no retry).
    max_attempts: int = 1
    retry_delay_s: float = 1.0
    timeout_s: float | None = None
    fallback: str | None = None
    join_strategy: str = DEFAULT_JOIN
    #: ``inline`` in the JSON: false keeps the node out of its predecessor's task (it always
    #: goes through Celery, ``docs/semantics.md``); a flowbridge extension, omitted when true.
    inline: bool = True
    #: The join strategy's own options (e.g. quorum's ``n``), as given in ``config``; read-only.
    join_options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # A copy of its own: the caller's dict may change later (it is compared, not hashed).
        object.__setattr__(self, "join_options", dict(sorted(dict(self.join_options).items())))

    def to_dict(self) -> dict[str, Any]:
        """The ``config`` object of flowcraft's JSON, durations in ms, every setting explicit."""
        out: dict[str, Any] = {
            "maxRetries": self.max_attempts,
            "retryDelay": _to_ms(self.retry_delay_s),
            "joinStrategy": self.join_strategy,
        }
        if self.timeout_s is not None:
            out["timeout"] = _to_ms(self.timeout_s)
        if self.fallback is not None:
            out["fallback"] = self.fallback
        if not self.inline:
            out["inline"] = False
        out.update(self.join_options)
        return out


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """One node: its id, the implementation it ``uses``, its params, inputs and config."""

    id: str
    uses: str
    params: Mapping[str, Any] = field(default_factory=dict)
    #: What the node's ``ctx.input`` is (flowcraft's ``inputs``); None: its predecessor's output.
    inputs: NodeInputs = None
    config: NodeConfig = field(default_factory=NodeConfig)

    # params is a dict, so hash what is hashable; equal specs still hash equal.
    def __hash__(self) -> int:
        return hash((self.id, self.uses, self.config))

    def to_dict(self) -> dict[str, Any]:
        """The node object of flowcraft's JSON."""
        out: dict[str, Any] = {
            "id": self.id,
            "uses": self.uses,
            "params": copy.deepcopy(dict(self.params)),
            "config": self.config.to_dict(),
        }
        if self.inputs is not None:
            out["inputs"] = self.inputs if isinstance(self.inputs, str) else dict(self.inputs)
        return out


@dataclass(frozen=True, kw_only=True)
class EdgeSpec:
    """An edge, taken when ``action`` matches (or is None) and ``condition`` holds.

    ``transform`` computes what the target receives as its input (flowcraft's edge
    ``transform``); without one it receives the source's output.
    """

    source: str
    target: str
    action: str | None = None
    condition: str | None = None
    transform: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The edge object of flowcraft's JSON."""
        out: dict[str, Any] = {"source": self.source, "target": self.target}
        if self.action is not None:
            out["action"] = self.action
        if self.condition is not None:
            out["condition"] = self.condition
        if self.transform is not None:
            out["transform"] = self.transform
        return out


@dataclass(frozen=True, kw_only=True)
class Blueprint:
    """A workflow definition: nodes and edges, identified by ``id`` and ``version``."""

    id: str
    version: str = "1"
    nodes: tuple[NodeSpec, ...]
    edges: tuple[EdgeSpec, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: lists become tuples and the
        # version lives in its own field only (to_dict puts it back into metadata).
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", tuple(self.edges))
        if "version" in self.metadata:
            meta = {k: v for k, v in self.metadata.items() if k != "version"}
            object.__setattr__(self, "metadata", meta)

    # Nodes hold dicts; id and version identify a blueprint, so equal ones hash equal.
    def __hash__(self) -> int:
        return hash((self.id, self.version, len(self.nodes), len(self.edges)))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for cached in ("analysis", "_by_id"):
            state.pop(cached, None)
        return state

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Blueprint:
        """Parse flowcraft's JSON (as loaded from JSON or YAML).

        Raises:
            BlueprintError: listing every structural problem found.
        """
        bp, issues = cls.parse(data)
        if bp is None:
            raise BlueprintError(issues[0].message)
        if issues:
            raise BlueprintError(f"blueprint {bp.id!r} is invalid", issues)
        return bp

    @classmethod
    def parse(cls, data: Any) -> tuple[Blueprint | None, list[ValidationIssue]]:
        """Parse leniently: the structural problems, and the blueprint made of what parsed.

        With problems, the blueprint (None when ``data`` is not an object) holds only the
        nodes and edges that parsed, a node without a valid ``uses`` having ``uses=""``;
        it is for reporting graph problems too (``flowbridge validate``), never for running.
        """
        if not isinstance(data, Mapping):
            return None, [
                ValidationIssue(
                    "bad-field",
                    "a blueprint must be a JSON object with id, nodes and edges, "
                    f"not {type(data).__name__}",
                )
            ]
        from tasks.blueprint.parse import BLUEPRINT_KEYS, Parser

        parser = Parser()
        bp_id = data.get("id")
        if not isinstance(bp_id, str) or not bp_id.strip():
            parser.add("bad-field", f"blueprint 'id' must be a non-empty string, got {bp_id!r}")
            bp_id = "?"
        parser.unknown(data, BLUEPRINT_KEYS, f"blueprint {bp_id!r}", required=("id", "nodes"))
        meta = data.get("metadata")
        if meta is None:
            meta = {}
        elif not isinstance(meta, Mapping):
            parser.add("bad-field", f"blueprint {bp_id!r}: 'metadata' must be an object")
            meta = {}
        entries = meta.get("cycleEntryPoints")
        if entries is not None and not (
            isinstance(entries, list | tuple) and all(isinstance(e, str) for e in entries)
        ):
            parser.add(
                "bad-field",
                f"blueprint {bp_id!r}: metadata.cycleEntryPoints must be a list of node ids, "
                f"got {entries!r}",
            )
            meta = {k: v for k, v in meta.items() if k != "cycleEntryPoints"}
        for flag in ("inline", "runEvents"):
            if flag in meta and not isinstance(meta[flag], bool):
                parser.add(
                    "bad-field",
                    f"blueprint {bp_id!r}: metadata.{flag} must be true or false, "
                    f"got {meta[flag]!r}",
                )
                meta = {k: v for k, v in meta.items() if k != flag}
        version = parser.version(meta.get("version", data.get("version")), bp_id)
        nodes = [parser.node(raw, n) for n, raw in enumerate(parser.items(data, "nodes", bp_id))]
        edges = [parser.edge(raw, n) for n, raw in enumerate(parser.items(data, "edges", bp_id))]
        bp = cls(
            id=bp_id,
            version=version,
            nodes=tuple(n for n in nodes if n is not None),
            edges=tuple(e for e in edges if e is not None),
            metadata=copy.deepcopy(dict(meta)),
        )
        return bp, parser.issues

    @classmethod
    def build(
        cls,
        id: str,
        nodes: Iterable[NodeSpec | Mapping[str, Any]],
        edges: Iterable[EdgeSpec | Mapping[str, Any]] = (),
        *,
        version: str | int = "1",
        metadata: Mapping[str, Any] | None = None,
    ) -> Blueprint:
        """Build a blueprint in Python from specs or flowcraft-style dicts (parsed as in JSON)."""
        data: dict[str, Any] = {
            "id": id,
            "metadata": {**(metadata or {}), "version": version},
            "nodes": [n.to_dict() if isinstance(n, NodeSpec) else n for n in nodes],
            "edges": [e.to_dict() if isinstance(e, EdgeSpec) else e for e in edges],
        }
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """This blueprint as flowcraft's JSON; ``from_dict(bp.to_dict()) == bp``."""
        return {
            "id": self.id,
            "metadata": {**copy.deepcopy(dict(self.metadata)), "version": self.version},
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
        }

    @property
    def inline(self) -> bool:
        """``metadata.inline``: whether a node may run in its predecessor's task (default true)."""
        return self.metadata.get("inline") is not False

    @property
    def run_events(self) -> bool:
        """``metadata.runEvents``: whether runs publish ``run.*`` records (default true)."""
        return self.metadata.get("runEvents") is not False

    @property
    def node_ids(self) -> tuple[str, ...]:
        """Node ids in declaration order."""
        return tuple(n.id for n in self.nodes)

    def node(self, node_id: str) -> NodeSpec:
        """The node called ``node_id``.

        Raises:
            KeyError: no such node; the message lists the blueprint's nodes.
        """
        try:
            return self._by_id[node_id]
        except KeyError:
            known = ", ".join(self.node_ids) or "none"
            raise KeyError(
                f"blueprint {self.id!r} version {self.version} has no node {node_id!r}; "
                f"nodes: {known}"
            ) from None

    @functools.cached_property
    def _by_id(self) -> dict[str, NodeSpec]:
        by_id: dict[str, NodeSpec] = {}
        for n in self.nodes:
            by_id.setdefault(n.id, n)
        return by_id

    @functools.cached_property
    def analysis(self) -> Analysis:
        """Start, terminal and join nodes and adjacency, computed once per blueprint."""
        return analyze(self)


def _to_ms(seconds: float) -> int | float | str:
    ms = seconds * 1000
    if ms / 1000 != seconds:
        # Not exact in milliseconds: a seconds string keeps from_dict(to_dict()) exact.
        return f"{seconds!r}s"
    return int(ms) if ms == int(ms) else ms
