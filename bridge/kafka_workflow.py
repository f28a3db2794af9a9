"""kafka-workflow's wire protocol: ``new:{json}`` starts a workflow, ``{"ref": ...}`` resumes it.

On ``<prefix>flowbridge.events`` and on the alias topic ``<prefix>workflow-resume``
(``FLOWBRIDGE_KW_RESUME_TOPIC``), keyed by the run id (kafka-workflow's thread id):

- ``new:`` followed by JSON starts the workflow named by the record's
  ``flowbridge-workflow`` header, else ``FLOWBRIDGE_KW_WORKFLOW``, with that JSON
  as its input; a repeat for a run that exists is recorded and ignored (the
  start is idempotent on the run id).
- ``{"ref": ID, "value": V}`` resumes ``await ctx.ref(ID)`` with ``V``;
  ``{"ref": ID, "error": E}`` raises ``RefError(E)`` there. Each record is its own
  delivery (the ecommerce example resumes the named ref ``main`` again and again,
  sometimes with the same bytes), deduplicated by topic, partition and offset.

Anything else that is not a flowbridge event is dead-lettered with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.errors import MessageError, reject_lone_surrogates
from tasks.errors import UnknownBlueprintError
from tasks.lifecycle import resume_ref, start
from tasks.runtime import Runtime
from tasks.workflow.dispatch import KAFKA_WORKFLOW

__all__ = ["KW_START_PREFIX", "KwResume", "KwStart", "apply_kw", "is_kw", "parse_kw"]

#: The prefix of a kafka-workflow start message's value.
KW_START_PREFIX = b"new:"
#: The header that names the workflow a ``new:`` message starts.
WORKFLOW_HEADER = "flowbridge-workflow"
#: The fields of a resume; anything else is a typo worth dead-lettering.
_RESUME_FIELDS = frozenset({"ref", "value", "error"})


@dataclass(frozen=True)
class KwStart:
    """``new:{json}``: start ``workflow`` as run ``run_id`` with ``input``."""

    run_id: str
    workflow: str
    input: Any


@dataclass(frozen=True)
class KwResume:
    """``{"ref": ID, "value"|"error": ...}``: resume ref ``ref`` of run ``run_id``."""

    run_id: str
    ref: str
    value: Any = None
    error: Any = None


def is_kw(value: bytes | None) -> bool:
    """Whether an events-topic value is kafka-workflow's (a start, or a JSON object with a ref)."""
    if value is None:
        return False
    if value.startswith(KW_START_PREFIX):
        return True
    head = value.lstrip()[:1]
    if head != b"{":
        return False
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and "ref" in obj and "type" not in obj


def parse_kw(
    value: bytes, *, key: bytes | None, headers: Any, default_workflow: str | None, max_bytes: int
) -> KwStart | KwResume:
    """Parse a kafka-workflow record, or raise ``MessageError`` saying what is wrong."""
    if len(value) > max_bytes:
        raise MessageError(
            f"value of {len(value)} bytes is over FLOWBRIDGE_MAX_MESSAGE_BYTES={max_bytes}"
        )
    if not key:
        raise MessageError("a kafka-workflow record needs its run id (thread id) as the key")
    try:
        run_id = key.decode()
    except UnicodeDecodeError:
        raise MessageError("the record key (the run id) is not UTF-8") from None
    if value.startswith(KW_START_PREFIX):
        workflow = _header(headers, WORKFLOW_HEADER) or default_workflow
        if not workflow:
            raise MessageError(
                "new: names no workflow: send the flowbridge-workflow header or set "
                "FLOWBRIDGE_KW_WORKFLOW on the bridge"
            )
        try:
            run_input = json.loads(value[len(KW_START_PREFIX) :])
            reject_lone_surrogates(value, run_input)
        except ValueError as exc:
            raise MessageError(f"new: is not followed by JSON: {exc}") from None
        except RecursionError:
            raise MessageError("new: is followed by JSON nested too deeply") from None
        return KwStart(run_id=run_id, workflow=workflow, input=run_input)
    try:
        obj = json.loads(value)
    except ValueError as exc:
        raise MessageError(f"not JSON and not new:{{json}}: {exc}") from None
    except RecursionError:
        raise MessageError("not new:{json} and JSON nested too deeply") from None
    reject_lone_surrogates(value, obj)
    if not isinstance(obj, dict):
        raise MessageError(
            f'a resume must be a JSON object {{"ref": ID, "value": V}}, got {type(obj).__name__}'
        )
    unknown = sorted(set(obj) - _RESUME_FIELDS)
    if unknown:
        raise MessageError(
            f"unknown field(s) {', '.join(map(repr, unknown))} in a resume "
            '(it has "ref" and one of "value" or "error")'
        )
    if "value" in obj and "error" in obj:
        raise MessageError('a resume has "value" or "error", not both')
    ref = obj.get("ref")
    if not isinstance(ref, str) or not ref:
        raise MessageError(f"field 'ref' must be a non-empty string, got {ref!r}")
    if "error" in obj:
        return KwResume(
            run_id=run_id, ref=ref, error=obj["error"] if obj["error"] is not None else "null"
        )
    return KwResume(run_id=run_id, ref=ref, value=obj.get("value"))


def apply_kw(rt: Runtime, msg: KwStart | KwResume, *, where: str) -> None:
    """Start or resume a run as ``msg`` says; ``where`` (topic:partition:offset) dedupes a resume.

    Raises:
        MessageError: the workflow is unknown, or the run is unknown or finished.
    """
    if isinstance(msg, KwStart):
        try:
            start(rt, msg.workflow, msg.input, run_id=msg.run_id, protocol=KAFKA_WORKFLOW)
        except UnknownBlueprintError as exc:
            raise MessageError(str(exc)) from None
        return
    delivery = resume_ref(rt, msg.run_id, msg.ref, key=where, value=msg.value, error=msg.error)
    if delivery.outcome == "no-run":
        raise MessageError(f"unknown run {msg.run_id!r} (ref {msg.ref!r})")
    if delivery.outcome == "finished":
        raise MessageError(f"run {msg.run_id!r} has finished: ref {msg.ref!r} not resumed")


def _header(headers: Any, name: str) -> str | None:
    for k, v in headers or ():
        if k == name and v is not None:
            if not isinstance(v, bytes):
                return str(v)
            try:
                return v.decode()
            except UnicodeDecodeError:
                raise MessageError(f"header {name!r} is not UTF-8") from None
    return None
