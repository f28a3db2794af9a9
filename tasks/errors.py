"""The errors of the ``tasks`` package: blueprints, registries and node code.

They extend the root in ``state.errors``::

    FlowbridgeError (state.errors)
    ├── ConfigError (state.errors)
    │   └── AppImportError      a FLOWBRIDGE_APP module failed to import; says which and why
    ├── BlueprintError          a blueprint is invalid; ``issues`` lists every problem
    │   └── ConditionError      an edge condition does not parse or uses something forbidden
    ├── UnknownBlueprintError   no blueprint registered with that id/version
    ├── UnknownNodeError        no node implementation registered for a ``uses`` name
    ├── RetryError              a run cannot be retried (not finished, never started, no such node)
    ├── NodeFailedError         a node failed for good: the task fails, so Celery and Flower see it
    ├── ResumeError             a resume names a node that cannot be resumed
    └── NodeError               raised by node code to steer retries (``retryable``, ``delay``)

Each constructor keeps its positional arguments in ``args`` so the errors
survive pickling and copying; keyword options live in attributes.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from state.errors import ConfigError, FlowbridgeError

if TYPE_CHECKING:
    from tasks.blueprint.validate import ValidationIssue

__all__ = [
    "WORKFLOW_RETRY",
    "AppImportError",
    "BlueprintError",
    "ConditionError",
    "NodeError",
    "NodeFailedError",
    "ResumeError",
    "RetryError",
    "UnknownBlueprintError",
    "UnknownNodeError",
]

#: Why a code workflow run is not retried (``{run_id}``): a retry re-runs blueprint nodes.
WORKFLOW_RETRY = (
    "run {run_id!r} is a code workflow: retry re-runs blueprint runs from a node; start the "
    "workflow again (a new run id) once its activity or code is fixed"
)


def _listing(names: Iterable[str]) -> str:
    ordered = sorted(set(names))
    return ", ".join(ordered) if ordered else "none"


class AppImportError(ConfigError):
    """A module listed in ``FLOWBRIDGE_APP`` raised while being imported."""

    def __init__(self, module: str, cause: BaseException) -> None:
        """Name the ``module`` and the exception its import raised."""
        super().__init__(module, f"{type(cause).__name__}: {cause}")
        self.module = module
        self.cause = f"{type(cause).__name__}: {cause}"
        frames = traceback.extract_tb(cause.__traceback__)
        # The innermost frame outside the import machinery is where the user's code failed.
        user = [f for f in frames if "importlib" not in f.filename and "<frozen" not in f.filename]
        self.where = f"{user[-1].filename}, line {user[-1].lineno}" if user else None
        self.missing = isinstance(cause, ModuleNotFoundError) and cause.name == module

    def __str__(self) -> str:
        text = f"cannot import FLOWBRIDGE_APP module {self.module!r}: {self.cause}"
        if self.missing:
            return text + " (is the directory that holds it on PYTHONPATH?)"
        return f"{text} ({self.where})" if self.where else text


class BlueprintError(FlowbridgeError):
    """A blueprint is invalid; ``issues`` holds every problem found, ``str()`` lists them."""

    def __init__(self, message: str, issues: Iterable[ValidationIssue] = ()) -> None:
        """Describe the failure in ``message`` and list the problems in ``issues``."""
        self.message = message
        self.issues: tuple[ValidationIssue, ...] = tuple(issues)
        super().__init__(message, self.issues)

    def __str__(self) -> str:
        if not self.issues:
            return self.message
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        return f"{self.message}:\n{lines}"


class ConditionError(BlueprintError):
    """An edge condition does not parse or uses a construct the condition language forbids."""

    def __init__(self, expression: str, problem: str) -> None:
        """Name the offending ``expression`` and say what is wrong with it."""
        shown = expression if len(expression) <= 200 else expression[:200] + "..."
        super().__init__(f"condition {shown!r} is invalid: {problem}")
        self.expression = expression
        self.problem = problem
        self.args = (expression, problem)


class UnknownBlueprintError(FlowbridgeError):
    """No blueprint is registered with that id (and version)."""

    def __init__(self, blueprint_id: str, version: str | None, known: Sequence[str]) -> None:
        """Name what was asked for and what is registered."""
        super().__init__(blueprint_id, version, tuple(known))
        self.blueprint_id = blueprint_id
        self.version = version
        self.known = tuple(known)

    def __str__(self) -> str:
        wanted = f"unknown blueprint {self.blueprint_id!r}"
        if self.version is not None:
            wanted += f" (version {self.version})"
        return f"{wanted}; registered: {_listing(self.known)}"


class UnknownNodeError(FlowbridgeError):
    """No node implementation is registered under a ``uses`` name."""

    def __init__(self, uses: str, known: Sequence[str]) -> None:
        """Name the missing ``uses`` and what is registered."""
        super().__init__(uses, tuple(known))
        self.uses = uses
        self.known = tuple(known)

    def __str__(self) -> str:
        return (
            f"no node registered for uses {self.uses!r}; registered: {_listing(self.known)} "
            f"(register it with @node({self.uses!r}) in a module listed in FLOWBRIDGE_APP)"
        )


class NodeError(FlowbridgeError):
    """Raised by node code to fail an attempt and say whether (and when) to retry it."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        delay: float | timedelta | None = None,
    ) -> None:
        """Fail with ``message``; ``delay`` overrides the node's ``retryDelay`` for this retry."""
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        delay_s = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if delay_s is not None:
            if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
                raise TypeError(f"NodeError delay must be seconds or a timedelta, not {delay!r}")
            if not delay_s >= 0:  # also rejects NaN
                raise ValueError(f"NodeError delay must not be negative, got {delay!r}")
        self.delay_s: float | None = None if delay_s is None else float(delay_s)

    def __str__(self) -> str:
        return self.message


class RetryError(FlowbridgeError):
    """A run cannot be retried as asked; the message says why and what to do instead."""


class NodeFailedError(FlowbridgeError):
    """Raised by the ``run_node`` task after the engine recorded that a node failed for good.

    The engine has committed the failure (and the run's) before; raising only makes the
    Celery task end as FAILURE, so Flower and Celery's ``task-failed`` events count
    workflow failures. Its message is the node's error.
    """


class ResumeError(FlowbridgeError):
    """A resume names a node that cannot be resumed (no such node, or not a wait or sleep)."""
