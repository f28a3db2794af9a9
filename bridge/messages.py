"""The message contract of ``<prefix>flowbridge.jobs``: parsing, with errors naming the problem.

Values are UTF-8 JSON objects with ``"v": 1``; flowcraft's job shape
``{"runId","blueprintId","nodeId","attempt"?}`` is accepted as a ``node`` job
(one for a start node of a run that does not exist yet creates it). On the
events topic, ``{"v":1,"type":"resume","run_id","node","output"?,"action"?}``
resumes a parked ``wait``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bridge.errors import MessageError, reject_lone_surrogates

__all__ = [
    "CancelJob",
    "EventJob",
    "Job",
    "NodeJob",
    "OperateJob",
    "ResumeJob",
    "StartJob",
    "parse_event",
    "parse_job",
]

VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,200}$")


@dataclass(frozen=True)
class StartJob:
    """Create a run (idempotent on ``run_id``) and dispatch its start nodes."""

    run_id: str | None
    blueprint: str
    version: str | None
    input: dict[str, Any]


@dataclass(frozen=True)
class NodeJob:
    """Run one node of an existing run."""

    run_id: str
    node: str
    attempt: int | None = None
    blueprint: str | None = None
    #: The node's iteration (a loop's pass; 0 outside loops).
    iteration: int = 0
    #: flowcraft's shape: for a run that does not exist yet, a start node's job creates it.
    flowcraft: bool = False


@dataclass(frozen=True)
class CancelJob:
    """Cancel a run (or leave a marker if its start has not arrived)."""

    run_id: str
    reason: str | None = None


@dataclass(frozen=True)
class OperateJob:
    """An operator's action on a run: ``retry`` (from nodes), ``pause`` or ``resume``."""

    action: str
    run_id: str
    from_nodes: tuple[str, ...] = ()


Job = StartJob | NodeJob | CancelJob | OperateJob

#: The operator's actions a jobs message may carry.
OPERATE = ("retry", "pause", "resume")


def _ident(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise MessageError(f"missing required field {key!r}")
        return None
    if not isinstance(value, str):
        raise MessageError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not _ID.match(value):
        raise MessageError(
            f"field {key!r}={value[:80]!r} is not a valid id (1-200 of letters, digits, _.:@/+=-)"
        )
    return value


def _node_id(obj: dict[str, Any]) -> str:
    """A node id (any non-empty string of at most 200 characters, as blueprints allow)."""
    node = obj.get("node")
    if not isinstance(node, str) or not node or len(node) > 200:
        raise MessageError("field 'node' must be a non-empty string of at most 200 characters")
    return node


def _attempt(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MessageError(f"field {key!r} must be an integer >= 1, got {value!r}")
    return value


def _decode(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    if value is None:
        raise MessageError("message has no value (a tombstone?)")
    if len(value) > max_bytes:
        raise MessageError(
            f"message is {len(value)} bytes, over FLOWBRIDGE_MAX_MESSAGE_BYTES={max_bytes}"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"value is not UTF-8: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MessageError(
            f"value is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        # json recurses per level: thousands of nested arrays exhaust the stack.
        raise MessageError("value is not JSON this bridge reads: nested too deeply") from None
    except ValueError as exc:
        # Python refuses integers of more than 4300 digits (a decoding cost guard).
        raise MessageError(f"value is not JSON this bridge reads: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"value must be a JSON object, got {type(obj).__name__}")
    reject_lone_surrogates(value, obj)
    return obj


def parse_job(value: bytes | None, *, max_bytes: int) -> Job:
    """Parse one jobs-topic value, or raise ``MessageError`` saying what is wrong."""
    obj = _decode(value, max_bytes)
    if "v" not in obj and "runId" in obj:
        return NodeJob(
            run_id=_ident(obj, "runId") or "",
            node=_ident(obj, "nodeId") or "",
            attempt=_attempt(obj, "attempt"),
            blueprint=_ident(obj, "blueprintId", required=False),
            flowcraft=True,
        )
    v = obj.get("v")
    if v is None:
        raise MessageError(f"missing required field 'v' (this bridge speaks v={VERSION})")
    if v != VERSION or isinstance(v, bool):
        raise MessageError(f"unsupported message version v={v!r} (this bridge speaks v={VERSION})")
    kind = obj.get("type")
    if kind == "start":
        run_id = _ident(obj, "run_id", required=False)
        try:
            blueprint = _ident(obj, "blueprint") or ""
            version = obj.get("version")
            if version is not None and (
                isinstance(version, bool) or not isinstance(version, (str, int))
            ):
                raise MessageError(f"field 'version' must be a string or integer, got {version!r}")
            run_input = obj.get("input", {})
            if not isinstance(run_input, dict):
                raise MessageError(
                    f"field 'input' must be a JSON object, got {type(run_input).__name__}"
                )
        except MessageError as exc:
            asked = obj.get("blueprint")
            raise MessageError(
                exc.reason,
                run_id=run_id,
                is_start=True,
                blueprint=asked if isinstance(asked, str) else "",
                input=obj.get("input"),
            ) from None
        return StartJob(
            run_id=run_id,
            blueprint=blueprint,
            version=None if version is None else str(version),
            input=run_input,
        )
    if kind == "node":
        iteration = obj.get("iteration", 0)
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise MessageError(f"field 'iteration' must be an integer >= 0, got {iteration!r}")
        return NodeJob(
            run_id=_ident(obj, "run_id") or "",
            node=_ident(obj, "node") or "",
            attempt=_attempt(obj, "attempt"),
            iteration=iteration,
        )
    if kind == "cancel":
        reason = obj.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise MessageError(f"field 'reason' must be a string, got {type(reason).__name__}")
        return CancelJob(run_id=_ident(obj, "run_id") or "", reason=reason)
    if kind in OPERATE:
        nodes = obj.get("from", [])
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise MessageError("field 'from' must be a list of node ids")
        return OperateJob(action=kind, run_id=_ident(obj, "run_id") or "", from_nodes=tuple(nodes))
    raise MessageError(
        f"unknown type {kind!r} (expected 'start', 'node', 'cancel', 'retry', 'pause' or 'resume')"
    )


@dataclass(frozen=True)
class EventJob:
    """An event for a run, from ``<prefix>flowbridge.events``."""

    run_id: str
    name: str
    event_id: str | None
    payload: Any = None


@dataclass(frozen=True)
class ResumeJob:
    """Resume a parked ``wait`` (or ``sleep``) of a run with an output and action."""

    run_id: str
    node: str
    event_id: str | None
    output: Any = None
    action: str | None = None


def parse_event(value: bytes | None, *, max_bytes: int) -> EventJob | ResumeJob:
    """Parse one events-topic value, or raise ``MessageError`` saying what is wrong."""
    obj = _decode(value, max_bytes)
    v = obj.get("v")
    if v is None:
        raise MessageError(f"missing required field 'v' (this bridge speaks v={VERSION})")
    if v != VERSION or isinstance(v, bool):
        raise MessageError(f"unsupported message version v={v!r} (this bridge speaks v={VERSION})")
    if obj.get("type") == "resume":
        action = obj.get("action")
        if action is not None and (not isinstance(action, str) or not action):
            raise MessageError(f"field 'action' must be a non-empty string, got {action!r}")
        return ResumeJob(
            run_id=_ident(obj, "run_id") or "",
            node=_node_id(obj),
            event_id=_ident(obj, "event_id", required=False),
            output=obj.get("output"),
            action=action,
        )
    if obj.get("type") != "event":
        raise MessageError(
            f"unknown type {obj.get('type')!r} on the events topic (expected 'event' or 'resume')"
        )
    name = obj.get("name")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise MessageError("field 'name' must be a non-empty string of at most 200 characters")
    return EventJob(
        run_id=_ident(obj, "run_id") or "",
        name=name,
        event_id=_ident(obj, "event_id", required=False),
        payload=obj.get("payload"),
    )
