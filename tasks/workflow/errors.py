"""Errors of workflow-as-code; they extend the tree drawn in ``state.errors``.

FlowbridgeError (state.errors)
├── WorkflowDefinitionError   a workflow or activity cannot be registered as written
├── ActivityError             an activity failed for good; raised at the ``await``
├── RefError                  a ``{"ref": ..., "error": ...}`` resume; raised at the ``await``
├── ChildWorkflowError        a child workflow failed; raised at the ``await``
└── NonDeterminismError       replaying the history produced other commands than recorded

BaseException (control flow: a user's ``except Exception`` must never catch these)
├── WorkflowEvicted           the activation is over; durable calls raise it during teardown
├── ContinueAsNew             ``ctx.continue_as_new(input)`` ends this generation
└── NonDeterministicCallError I/O, threads or the wall clock inside workflow code
"""

from __future__ import annotations

import json
from typing import Any

from state.errors import FlowbridgeError

__all__ = [
    "ActivityError",
    "ChildWorkflowError",
    "ContinueAsNew",
    "NonDeterminismError",
    "NonDeterministicCallError",
    "RefError",
    "WorkflowDefinitionError",
    "WorkflowEvicted",
]


class WorkflowDefinitionError(FlowbridgeError):
    """A workflow or activity cannot be registered as written (the message says why)."""


class ActivityError(FlowbridgeError):
    """An activity failed for good (after its retries); ``type`` and ``message`` are its error's."""

    def __init__(self, name: str, message: str, *, type: str = "Exception") -> None:
        """Name the activity and what it raised."""
        super().__init__(f"activity {name!r} failed: {type}: {message}")
        self.name = name
        self.type = type
        self.message = message


class ChildWorkflowError(FlowbridgeError):
    """A child workflow run failed or was cancelled."""

    def __init__(self, run_id: str, message: str) -> None:
        """Name the child run and why it ended."""
        super().__init__(f"child run {run_id!r}: {message}")
        self.run_id = run_id
        self.message = message


class RefError(FlowbridgeError):
    """A ref was resumed with an error (kafka-workflow's ``{"ref": ID, "error": E}``)."""

    def __init__(self, payload: Any) -> None:
        """Keep the error payload as sent; ``str()`` is it as text (a string stays itself)."""
        super().__init__(payload)
        self.payload = payload

    def __str__(self) -> str:
        """The payload: a string as itself, anything else as its JSON."""
        if isinstance(self.payload, str):
            return self.payload
        return json.dumps(self.payload, sort_keys=True)


class NonDeterminismError(FlowbridgeError):
    """Workflow code produced other commands on replay than its history recorded."""

    def __init__(self, message: str, *, activation: int, seq: int | None, expected: Any, got: Any):
        """Say where replay diverged and what was expected and produced."""
        super().__init__(message)
        self.activation = activation
        self.seq = seq
        self.expected = expected
        self.got = got

    def report(self) -> dict[str, Any]:
        """The ``blocked`` record stored on the run (JSON)."""
        return {
            "error": str(self),
            "activation": self.activation,
            "seq": self.seq,
            "expected": self.expected,
            "produced": self.got,
        }


class WorkflowEvicted(BaseException):
    """The activation is being torn down: durable calls raise this and do nothing."""


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new``: this generation ends and a new one starts."""

    def __init__(self, input: Any) -> None:
        """Carry the next generation's input."""
        super().__init__(input)
        self.input = input


class NonDeterministicCallError(BaseException):
    """I/O, a thread, a subprocess or an executor was used inside workflow code."""
