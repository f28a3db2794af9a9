"""flowbridge's public API in one place, safe to import from a Celery project.

Celery projects often have a ``tasks.py`` of their own that would shadow our
``tasks`` package; ``from flowbridge import node, Result`` always works.
``Client`` (and ``RunStateError``, what its operator actions raise) are loaded on first
access so that node modules do not import Kafka.
"""

from typing import Any

from tasks.blueprint import Blueprint
from tasks.context import NodeContext, Result
from tasks.errors import NodeError
from tasks.registry import node, register_blueprint
from tasks.workflow import (
    ActivityError,
    ChildWorkflowError,
    NonDeterminismError,
    RefError,
    WorkflowContext,
    activity,
    workflow,
)

__all__ = [
    "ActivityError",
    "Blueprint",
    "ChildWorkflowError",
    "Client",
    "NodeContext",
    "NodeError",
    "NonDeterminismError",
    "RefError",
    "Result",
    "RunHandle",
    "RunStateError",
    "WorkflowContext",
    "activity",
    "node",
    "register_blueprint",
    "workflow",
]


def __getattr__(name: str) -> Any:
    """Load the Kafka-backed client classes on first access."""
    if name in ("Client", "RunHandle"):
        from bridge import client

        return getattr(client, name)
    if name == "RunStateError":
        from bridge.errors import RunStateError

        return RunStateError
    raise AttributeError(f"module 'flowbridge' has no attribute {name!r}")
