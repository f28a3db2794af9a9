"""The public surface is deliberate: these lists change only on purpose (and in CHANGELOG.md)."""

from __future__ import annotations

import subprocess
import sys

import bridge
import flowbridge
import state
import tasks


def test_exported_members() -> None:
    assert sorted(flowbridge.__all__) == [
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
    assert sorted(tasks.__all__) == [
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
    assert sorted(bridge.__all__) == [
        "BridgeSettings",
        "Client",
        "KafkaSettings",
        "MessageError",
        "RunHandle",
        "RunTimeout",
    ]
    assert "StateStore" in state.__all__ and "open_store" in state.__all__
    for module in (flowbridge, tasks, bridge, state):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_importing_the_node_api_imports_neither_celery_nor_kafka() -> None:
    code = (
        "import sys, flowbridge, tasks; from flowbridge import node, Result, NodeError;"
        "print(sorted(m for m in ('celery', 'kafka') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_tree_has_one_root() -> None:
    from bridge.errors import MessageError
    from state.errors import FlowbridgeError
    from tasks.errors import BlueprintError, NodeError, UnknownBlueprintError, UnknownNodeError
    from tasks.workflow import ActivityError, NonDeterminismError, RefError

    errors = (MessageError, BlueprintError, NodeError, UnknownBlueprintError, UnknownNodeError)
    for exc in (*errors, ActivityError, NonDeterminismError, RefError):
        assert issubclass(exc, FlowbridgeError)
