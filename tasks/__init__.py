"""flowbridge's workers: blueprints, the node registry, the Celery app and the engine.

User code imports ``node``, ``Result`` and ``NodeError`` from here (or from the
``flowbridge`` facade); ``celery -A tasks worker`` finds ``app``, which is
loaded on first access so that importing ``tasks`` for ``@node`` does not
import Celery.
"""

from typing import Any

from tasks.blueprint import Blueprint
from tasks.context import NodeContext, Result
from tasks.errors import BlueprintError, NodeError, UnknownBlueprintError, UnknownNodeError
from tasks.registry import node, register_blueprint
from tasks.settings import Settings
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
    "BlueprintError",
    "ChildWorkflowError",
    "NodeContext",
    "NodeError",
    "NonDeterminismError",
    "RefError",
    "Result",
    "Settings",
    "UnknownBlueprintError",
    "UnknownNodeError",
    "WorkflowContext",
    "activity",
    "app",
    "node",
    "register_blueprint",
    "workflow",
]


def __getattr__(name: str) -> Any:
    """Load the Celery app on first access (``celery -A tasks`` asks for ``tasks.app``)."""
    if name == "app":
        from tasks.worker.app import app

        return app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
