"""Workflow-as-code: ``async def`` workflows with durable awaits, replayed from their history.

The user API (``workflow``, ``activity``, the ``ctx`` of ``WorkflowContext``,
the errors) is importable from ``flowbridge``. Inside: ``loop`` (the
deterministic event loop), ``machine`` (one run rebuilt from its history for
one activation), ``context`` (``ctx``), ``history`` (activations, inputs,
commands), ``api`` (registration and its checks).
"""

from tasks.workflow.api import (
    ActivityDef,
    RetryPolicy,
    WorkflowDef,
    activities,
    activity,
    workflow,
    workflows,
)
from tasks.workflow.context import Ref, WorkflowContext
from tasks.workflow.errors import (
    ActivityError,
    ChildWorkflowError,
    ContinueAsNew,
    NonDeterminismError,
    NonDeterministicCallError,
    RefError,
    WorkflowDefinitionError,
    WorkflowEvicted,
)
from tasks.workflow.history import Activation, Command, Input
from tasks.workflow.machine import ActivationResult, Machine

__all__ = [
    "Activation",
    "ActivationResult",
    "ActivityDef",
    "ActivityError",
    "ChildWorkflowError",
    "Command",
    "ContinueAsNew",
    "Input",
    "Machine",
    "NonDeterminismError",
    "NonDeterministicCallError",
    "Ref",
    "RefError",
    "RetryPolicy",
    "WorkflowContext",
    "WorkflowDef",
    "WorkflowDefinitionError",
    "WorkflowEvicted",
    "activities",
    "activity",
    "workflow",
    "workflows",
]
