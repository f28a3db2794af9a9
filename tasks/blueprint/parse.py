"""Parsing flowcraft's JSON into the model, reporting every structural problem at once.

Every object of a blueprint has a known set of keys; a key outside it is a
problem (``unknown-key``, or ``unknown-config`` inside ``config``) that lists
the known ones or the key it may be a typo of. flowcraft itself drops unknown
keys silently, so a misspelt ``"condtion"`` makes an edge unconditional there;
refusing them is a deliberate difference (``docs/blueprints.md``). ``metadata``
is free-form, as in flowcraft; its ``version`` and ``cycleEntryPoints`` are read.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

from tasks.blueprint.model import EdgeSpec, NodeConfig, NodeInputs, NodeSpec
from tasks.blueprint.validate import ValidationIssue, node_config_issues, unknown_keys
from tasks.durations import parse_duration
from tasks.joins import issue_codes, option_keys

__all__ = ["BLUEPRINT_KEYS", "EDGE_KEYS", "NODE_KEYS", "Parser"]

#: The keys of the blueprint object (``version`` is also read from ``metadata``).
BLUEPRINT_KEYS = ("id", "version", "metadata", "nodes", "edges")
#: The keys of a node; ``_sourceLocation`` is flowcraft's debug field (accepted, dropped).
NODE_KEYS = ("id", "uses", "params", "inputs", "config", "_sourceLocation")
#: The keys of an edge; ``_sourceLocation`` as for nodes.
EDGE_KEYS = ("source", "target", "action", "condition", "transform", "_sourceLocation")
#: The ``config`` keys of every node; join strategies add their own (``option_keys``).
BASE_CONFIG_KEYS = ("maxRetries", "retryDelay", "timeout", "fallback", "joinStrategy", "inline")


def _typo_hint(obj: Mapping[str, Any], key: str) -> str:
    """`` (is 'usse' a typo of 'uses'?)`` when ``key`` is missing and a key like it is there."""
    if key in obj:
        return ""
    close = difflib.get_close_matches(key, [str(k) for k in obj], n=1, cutoff=0.7)
    return f" (is {close[0]!r} a typo of {key!r}?)" if close else ""


class Parser:
    """Collects every structural issue instead of stopping at the first."""

    def __init__(self) -> None:
        """Start with no issues."""
        self.issues: list[ValidationIssue] = []

    def add(
        self,
        code: str,
        message: str,
        node: str | None = None,
        edge: tuple[str, str] | None = None,
    ) -> None:
        """Record one problem."""
        self.issues.append(ValidationIssue(code, message, node=node, edge=edge))

    def unknown(
        self,
        obj: Mapping[str, Any],
        known: tuple[str, ...],
        label: str,
        *,
        required: tuple[str, ...] = (),
        node: str | None = None,
        edge: tuple[str, str] | None = None,
    ) -> None:
        """Record each key of ``obj`` that is not one of ``known``."""
        for key, hint in unknown_keys(obj, known, required=required):
            self.add("unknown-key", f"{label}: unknown key {key!r} ({hint})", node=node, edge=edge)

    def version(self, raw: Any, bp_id: str) -> str:
        """The blueprint's version as a string (``"1"`` when absent)."""
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
        """The list under ``key`` (``nodes``, ``edges``)."""
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
        """A required non-empty string."""
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
        """One node, or None when it has no usable id."""
        if not isinstance(raw, Mapping):
            self.add("bad-field", f"nodes[{position}] must be an object, got {raw!r}")
            return None
        node_id = self.text(raw, "id", f"nodes[{position}].id")
        label = f"node {node_id!r}" if node_id else f"nodes[{position}]"
        uses = self.text(raw, "uses", f"{label}: 'uses'", node=node_id)
        self.unknown(raw, NODE_KEYS, label, required=("id", "uses"), node=node_id)
        params = raw.get("params")
        if params is None:
            params = {}
        elif not isinstance(params, Mapping):
            self.add("bad-field", f"{label}: 'params' must be an object", node=node_id)
            params = {}
        inputs = self.inputs(raw.get("inputs"), label, node_id)
        config, bad_keys = self.config(raw.get("config"), label, node_id)
        if node_id is None:
            return None
        # Kept with an empty uses (the problem is recorded) so graph checks still see the node.
        spec = NodeSpec(
            id=node_id,
            uses=uses or "",
            params=copy.deepcopy(dict(params)),
            inputs=inputs,
            config=config,
        )
        for issue in node_config_issues(spec):
            # A mistyped option or joinStrategy was dropped; its follow-ups would only confuse.
            if issue.code not in issue_codes() or not bad_keys & {*option_keys(), "joinStrategy"}:
                self.issues.append(issue)
        return spec

    def inputs(self, raw: Any, label: str, node_id: str | None) -> NodeInputs:
        """``inputs``: a string, or an object of strings (flowcraft's input mapping)."""
        if raw is None or raw == "":
            return None  # flowcraft treats an empty mapping string as none
        if isinstance(raw, str):
            return raw
        if isinstance(raw, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()
        ):
            return dict(raw)
        self.add(
            "bad-field",
            f"{label}: 'inputs' must be a string (a node id or context key) or an object of "
            f"them, got {raw!r}",
            node=node_id,
        )
        return None

    def config(self, raw: Any, label: str, node_id: str | None) -> tuple[NodeConfig, set[str]]:
        """The node's config, and the keys whose values were refused."""
        if raw is None:
            return NodeConfig(), set()
        if not isinstance(raw, Mapping):
            self.add("bad-field", f"{label}: 'config' must be an object", node=node_id)
            return NodeConfig(), set()
        join_keys = option_keys()
        config_keys = (*BASE_CONFIG_KEYS, *join_keys)
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
        value = raw.get("inline")
        if value is not None:
            if not isinstance(value, bool):
                bad("inline", "true or false")
            else:
                values["inline"] = value
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
        """One edge, or None when its source or target is unusable."""
        if not isinstance(raw, Mapping):
            self.add("bad-field", f"edges[{position}] must be an object, got {raw!r}")
            return None
        source = self.text(raw, "source", f"edges[{position}].source")
        target = self.text(raw, "target", f"edges[{position}].target")
        label = f"edge {source!r} -> {target!r}" if source and target else f"edges[{position}]"
        pair = (source, target) if source and target else None
        self.unknown(raw, EDGE_KEYS, label, required=("source", "target"), edge=pair)
        action = raw.get("action")
        if action is not None and (not isinstance(action, str) or not action):
            self.add("bad-field", f"{label}: 'action' must be a non-empty string", edge=pair)
            action = None
        expressions: dict[str, str | None] = {}
        for key in ("condition", "transform"):
            value = raw.get(key)
            if value is not None and not isinstance(value, str):
                self.add("bad-field", f"{label}: {key!r} must be a string", edge=pair)
                value = None
            # An empty expression (as editors often write) means none: "always", "as is".
            expressions[key] = value if value and value.strip() else None
        if source is None or target is None:
            return None
        return EdgeSpec(
            source=source,
            target=target,
            action=action,
            condition=expressions["condition"],
            transform=expressions["transform"],
        )
