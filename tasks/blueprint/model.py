"""Blueprints as immutable values: nodes, edges and their config, in flowcraft's JSON shape.

``Blueprint.from_dict`` parses flowcraft's format and reports every structural
problem at once (``bad-field``, ``unknown-config`` and each node's own config
checks); graph checks are ``validate``'s. Durations are float seconds here and
milliseconds in the JSON. ``params`` and ``metadata`` are plain dicts (copied
on parse, so JSON-serialisable); treat them as read-only.
"""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.blueprint.analysis import Analysis, analyze
from tasks.blueprint.validate import ValidationIssue, node_config_issues
from tasks.durations import parse_duration
from tasks.errors import BlueprintError
from tasks.joins import DEFAULT_JOIN, issue_codes, option_keys

__all__ = ["Blueprint", "EdgeSpec", "NodeConfig", "NodeSpec"]

#: The ``config`` keys of every node; join strategies add their own (``option_keys``).
_BASE_CONFIG_KEYS = ("maxRetries", "retryDelay", "timeout", "fallback", "joinStrategy")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """How a node is retried, timed out, replaced on failure and joined."""

    #: ``maxRetries`` in the JSON: attempts in total, as in flowcraft (1: no retry).
    max_attempts: int = 1
    retry_delay_s: float = 1.0
    timeout_s: float | None = None
    fallback: str | None = None
    join_strategy: str = DEFAULT_JOIN
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
        out.update(self.join_options)
        return out


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """One node: its id, the implementation it ``uses``, its params and config."""

    id: str
    uses: str
    params: Mapping[str, Any] = field(default_factory=dict)
    config: NodeConfig = field(default_factory=NodeConfig)

    # params is a dict, so hash what is hashable; equal specs still hash equal.
    def __hash__(self) -> int:
        return hash((self.id, self.uses, self.config))

    def to_dict(self) -> dict[str, Any]:
        """The node object of flowcraft's JSON."""
        return {
            "id": self.id,
            "uses": self.uses,
            "params": copy.deepcopy(dict(self.params)),
            "config": self.config.to_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class EdgeSpec:
    """An edge, taken when ``action`` matches (or is None) and ``condition`` holds."""

    source: str
    target: str
    action: str | None = None
    condition: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The edge object of flowcraft's JSON."""
        out: dict[str, Any] = {"source": self.source, "target": self.target}
        if self.action is not None:
            out["action"] = self.action
        if self.condition is not None:
            out["condition"] = self.condition
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
        parser = _Parser()
        bp_id = data.get("id")
        if not isinstance(bp_id, str) or not bp_id.strip():
            parser.add("bad-field", f"blueprint 'id' must be a non-empty string, got {bp_id!r}")
            bp_id = "?"
        meta = data.get("metadata")
        if meta is None:
            meta = {}
        elif not isinstance(meta, Mapping):
            parser.add("bad-field", f"blueprint {bp_id!r}: 'metadata' must be an object")
            meta = {}
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


def _typo_hint(obj: Mapping[str, Any], key: str) -> str:
    """`` (is 'usse' a typo of 'uses'?)`` when ``key`` is missing and a key like it is there."""
    if key in obj:
        return ""
    close = difflib.get_close_matches(key, [str(k) for k in obj], n=1, cutoff=0.7)
    return f" (is {close[0]!r} a typo of {key!r}?)" if close else ""


class _Parser:
    """Collects every structural issue instead of stopping at the first."""

    def __init__(self) -> None:
        self.issues: list[ValidationIssue] = []

    def add(
        self,
        code: str,
        message: str,
        node: str | None = None,
        edge: tuple[str, str] | None = None,
    ) -> None:
        self.issues.append(ValidationIssue(code, message, node=node, edge=edge))

    def version(self, raw: Any, bp_id: str) -> str:
        if raw is None:
            return "1"
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip():
            hint = f" (write it as a string, e.g. '{raw}')" if isinstance(raw, float) else ""
            self.add(
                "bad-field",
                f"blueprint {bp_id!r}: metadata.version must be a string or an integer, "
                f"got {raw!r}{hint}",
            )
            return "1"
        return str(raw).strip()

    def items(self, data: Mapping[str, Any], key: str, bp_id: str) -> list[Any]:
        raw = data.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list | tuple):
            self.add("bad-field", f"blueprint {bp_id!r}: {key!r} must be a list")
            return []
        return list(raw)

    def text(
        self, obj: Mapping[str, Any], key: str, where: str, *, node: str | None = None
    ) -> str | None:
        raw = obj.get(key)
        if isinstance(raw, str) and raw.strip():
            return raw
        self.add(
            "bad-field",
            f"{where} must be a non-empty string, got {raw!r}{_typo_hint(obj, key)}",
            node=node,
        )
        return None

    def node(self, raw: Any, position: int) -> NodeSpec | None:
        if not isinstance(raw, Mapping):
            self.add("bad-field", f"nodes[{position}] must be an object, got {raw!r}")
            return None
        node_id = self.text(raw, "id", f"nodes[{position}].id")
        label = f"node {node_id!r}" if node_id else f"nodes[{position}]"
        uses = self.text(raw, "uses", f"{label}: 'uses'", node=node_id)
        params = raw.get("params")
        if params is None:
            params = {}
        elif not isinstance(params, Mapping):
            self.add("bad-field", f"{label}: 'params' must be an object", node=node_id)
            params = {}
        config, bad_keys = self.config(raw.get("config"), label, node_id)
        if node_id is None:
            return None
        # Kept with an empty uses (the problem is recorded) so graph checks still see the node.
        spec = NodeSpec(
            id=node_id, uses=uses or "", params=copy.deepcopy(dict(params)), config=config
        )
        for issue in node_config_issues(spec):
            # A mistyped option or joinStrategy was dropped; its follow-ups would only confuse.
            if issue.code not in issue_codes() or not bad_keys & {*option_keys(), "joinStrategy"}:
                self.issues.append(issue)
        return spec

    def config(self, raw: Any, label: str, node_id: str | None) -> tuple[NodeConfig, set[str]]:
        if raw is None:
            return NodeConfig(), set()
        if not isinstance(raw, Mapping):
            self.add("bad-field", f"{label}: 'config' must be an object", node=node_id)
            return NodeConfig(), set()
        join_keys = option_keys()
        config_keys = (*_BASE_CONFIG_KEYS, *join_keys)
        for key in raw:
            if key not in config_keys:
                close = difflib.get_close_matches(key, config_keys, n=1)
                known = f"did you mean {close[0]!r}?" if close else "known: "
                known += "" if close else ", ".join(sorted(config_keys))
                self.add(
                    "unknown-config",
                    f"{label}: unknown config key {key!r} ({known})",
                    node=node_id,
                )
        values: dict[str, Any] = {}
        bad_keys: set[str] = set()

        def bad(key: str, expected: str) -> None:
            bad_keys.add(key)
            self.add(
                "bad-field",
                f"{label}: config.{key} must be {expected}, got {raw[key]!r}",
                node=node_id,
            )

        value = raw.get("maxRetries")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                bad("maxRetries", "a positive integer (attempts in total)")
            else:
                values["max_attempts"] = value
        options: dict[str, Any] = {}
        for key, option in join_keys.items():
            value = raw.get(key)
            if value is None:
                continue
            if option.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                bad(key, "an integer")
            elif option.kind is str and not isinstance(value, str):
                bad(key, "a string")
            else:
                options[key] = value
        if options:
            values["join_options"] = options
        for key, attr in (("retryDelay", "retry_delay_s"), ("timeout", "timeout_s")):
            value = raw.get(key)
            if value is None:
                continue
            try:
                values[attr] = parse_duration(value)
            except ValueError as exc:
                bad(key, f"milliseconds or a duration like '5s' ({exc})")
        for key, attr in (("fallback", "fallback"), ("joinStrategy", "join_strategy")):
            value = raw.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                bad(key, "a non-empty string")
            else:
                values[attr] = value
        return NodeConfig(**values), bad_keys

    def edge(self, raw: Any, position: int) -> EdgeSpec | None:
        if not isinstance(raw, Mapping):
            self.add("bad-field", f"edges[{position}] must be an object, got {raw!r}")
            return None
        source = self.text(raw, "source", f"edges[{position}].source")
        target = self.text(raw, "target", f"edges[{position}].target")
        label = f"edge {source!r} -> {target!r}" if source and target else f"edges[{position}]"
        pair = (source, target) if source and target else None
        action = raw.get("action")
        if action is not None and (not isinstance(action, str) or not action):
            self.add("bad-field", f"{label}: 'action' must be a non-empty string", edge=pair)
            action = None
        condition = raw.get("condition")
        if condition is not None and not isinstance(condition, str):
            self.add("bad-field", f"{label}: 'condition' must be a string", edge=pair)
            condition = None
        if source is None or target is None:
            return None
        # An empty condition (as editors often write) means "always".
        condition = condition if condition and condition.strip() else None
        return EdgeSpec(source=source, target=target, action=action, condition=condition)
