"""The state layer's structure: its surface, the backend registry, records and the pure rules.

Behaviour of every backend is the contract suite's (``tests/contract``); this
pins what the layout promises: backends chosen by URL scheme and independent
of each other, statuses as ``StrEnum``, history kinds defined once, rules that
are pure functions.
"""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest

import state
from state import open_store
from state.backends import register, schemes
from state.constants import NODE_ACTIVE, NODE_PENDING, RUN_ACTIVE, RUN_RUNNABLE, RUN_RUNNING
from state.errors import ConfigError, SchemaError, StaleFenceError
from state.history import HistoryKind, node_kind, run_kind
from state.memory import MemoryStore, drop
from state.records import NodeCompletion, NodeState, NodeStatus, Run, RunStatus
from state.rules import AS_READ, Verdict, nodes, runs, waits
from state.rules.changes import RunView, Wait
from state.scylla import ScyllaStore
from state.sqlite import SQLiteStore

STATE = Path(state.__file__).parent


def test_the_state_surface_is_deliberate() -> None:
    assert sorted(state.__all__) == [
        "Arrival",
        "ArrivalOutcome",
        "CommitResult",
        "ConfigError",
        "DEFAULT_STATE_URL",
        "DeliveryOutcome",
        "FlowbridgeError",
        "HistoryEvent",
        "HistoryKind",
        "NodeCompletion",
        "NodeState",
        "NodeStatus",
        "OutboxMessage",
        "RUN_ACTIVE",
        "RUN_TERMINAL",
        "Run",
        "RunStatus",
        "SchemaError",
        "StaleFenceError",
        "StateError",
        "StateStore",
        "WakeKind",
        "open_store",
        "state_url_from_env",
    ]


# --- the registry ---------------------------------------------------------------------------
def test_each_scheme_opens_its_backend(tmp_path: Path) -> None:
    assert schemes() == ["cassandra", "memory", "scylla", "sqlite"]
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'x.db'}"), SQLiteStore)
    assert isinstance(open_store("memory://layout"), MemoryStore)
    for url in ("scylla://db/ks", "cassandra://db/ks"):
        store = open_store(url)
        assert isinstance(store, ScyllaStore) and store._conn is None  # lazy: nothing connected
    drop("layout")


def test_auto_migrate_says_who_creates_the_schema(tmp_path: Path) -> None:
    assert open_store(f"sqlite:///{tmp_path / 'x.db'}").auto_migrate is True
    assert open_store("memory://").auto_migrate is True
    assert open_store("scylla://db/ks").auto_migrate is False


def test_an_unknown_scheme_lists_the_known_ones_without_quoting_the_url() -> None:
    with pytest.raises(ConfigError) as info:
        open_store("postgres://app:s3cr3t@db/runs")
    text = str(info.value)
    assert "'postgres'" in text and "s3cr3t" not in text
    assert all(f"{s}://" in text for s in ("sqlite", "scylla", "cassandra", "memory"))


def test_sqlite_is_refused_on_a_dyno() -> None:
    with pytest.raises(ConfigError, match="DYNO"):
        open_store("sqlite:///x.db", env={"DYNO": "web.1"})
    with pytest.raises(ConfigError, match=r"sqlite:///relative\.db"):
        open_store("sqlite://x.db")


def test_a_backend_can_be_registered(tmp_path: Path) -> None:
    seen: list[str] = []

    def opener(url: str, **_: object) -> MemoryStore:
        seen.append(url)
        return MemoryStore("registered")

    register("test-only", opener)
    try:
        assert isinstance(open_store("test-only://x"), MemoryStore) and seen == ["test-only://x"]
    finally:
        from state import backends

        backends._registry.pop("test-only")
        drop("registered")


def test_backends_import_neither_each_other_nor_the_registry() -> None:
    for backend in ("sqlite", "scylla", "memory"):
        for path in (STATE / backend).glob("*.py"):
            tree = ast.parse(path.read_text())
            imported = {
                node.module
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module
            }
            others = {f"state.{b}" for b in ("sqlite", "scylla", "memory") if b != backend}
            assert not any(m.split(".")[:2] == o.split(".") for m in imported for o in others), path
            assert "state.backends" not in imported and "state.url" not in imported, path


# --- the memory backend ---------------------------------------------------------------------
def test_memory_stores_of_one_name_share_their_data() -> None:
    a, b = MemoryStore("shared"), open_store("memory://shared")
    other = MemoryStore("other")
    try:
        a.migrate()
        other.migrate()
        a.create_run(_run("r1"), start_nodes=["n"])
        assert b.get_run("r1") is not None and other.get_run("r1") is None
    finally:
        drop("shared")
        drop("other")
    with pytest.raises(ConfigError, match="no options"):
        open_store("memory://x?y=1")


def test_memory_store_needs_its_schema_and_uses_the_given_clock() -> None:
    now = [1000.0]
    store = MemoryStore("clocked", clock=lambda: now[0], retention_s=10)
    try:
        with pytest.raises(SchemaError, match="migrate"):
            store.get_run("r1")
        store.migrate()
        created, run = store.create_run(_run("r1"), start_nodes=["n"])
        assert created and run.created_at == 1000.0
        now[0] += 86400  # a day passes at once
        assert store.finish_run("r1", status="completed")
        now[0] += 11
        assert store.purge_expired() == 1 and store.get_run("r1") is None
    finally:
        drop("clocked")


def test_a_memory_transaction_that_raises_leaves_nothing_behind() -> None:
    store = MemoryStore("rollback")
    try:
        store.migrate()
        store.create_run(_run("r1"), start_nodes=["a"])
        store.begin_attempt("r1", "a", 0, 1)
        bad = NodeCompletion(
            run_id="r1", node_id="a", pending=("b",), context_writes={"k": object()}
        )
        with pytest.raises(TypeError):
            store.commit_node(bad)  # the context value is not JSON: nothing of the commit stays
        node = store.get_node("r1", "a")
        assert node is not None and node.status == NodeStatus.RUNNING
        assert store.get_node("r1", "b") is None and store.get_context("r1") == {}
        assert "node.completed" not in [e.kind for e in store.get_history("r1")]
    finally:
        drop("rollback")


def test_memory_store_is_thread_safe() -> None:
    store = MemoryStore("threads")
    try:
        store.migrate()
        store.create_run(_run("r1"), start_nodes=[f"n{i}" for i in range(50)])
        threads = [
            threading.Thread(target=store.begin_attempt, args=("r1", f"n{i}", 0, 1))
            for i in range(50)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seqs = [e.seq for e in store.get_history("r1")]
        assert seqs == list(range(1, 52))
    finally:
        drop("threads")


# --- records and history kinds --------------------------------------------------------------
def test_statuses_are_str_enums_equal_to_their_old_strings() -> None:
    assert RUN_RUNNING is RunStatus.RUNNING and RUN_RUNNING == "running"
    assert NODE_PENDING is NodeStatus.PENDING and f"{NODE_PENDING}" == "pending"
    assert {"pending", "running", "waiting"} == RUN_RUNNABLE == NODE_ACTIVE
    assert RUN_RUNNABLE | {"paused"} == RUN_ACTIVE
    assert run_kind(RunStatus.FAILED) is HistoryKind.RUN_FAILED
    assert node_kind(NodeStatus.SKIPPED) is HistoryKind.NODE_SKIPPED


def test_backends_never_spell_a_history_kind() -> None:
    kinds = {k.value for k in HistoryKind}
    for path in STATE.rglob("*.py"):
        if path.name == "history.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in kinds, f"{path}: {node.value!r}"


# --- the rules are pure ---------------------------------------------------------------------
def test_claim_counts_deliveries_and_takes_over_only_when_asked() -> None:
    pending = _node(NodeStatus.PENDING)
    first = nodes.claim(pending, attempt=1, takeover=False, now=5.0)
    assert first.applied and first.condition is AS_READ and first.node is not None
    assert (first.node.status, first.node.attempts, first.node.deliveries) == ("running", 1, 1)
    running = first.node
    assert nodes.claim(running, attempt=1, takeover=False, now=6.0).verdict is Verdict.REFUSED
    again = nodes.claim(running, attempt=1, takeover=True, now=6.0)
    assert again.node is not None and again.node.deliveries == 2
    assert nodes.claim(None, attempt=1, takeover=True, now=6.0).verdict is Verdict.MISSING


def test_a_late_completion_writes_only_its_node() -> None:
    cp = NodeCompletion(run_id="r", node_id="a", pending=("b",), context_writes={"k": 1})
    late = nodes.complete(_node(NodeStatus.RUNNING), RunStatus.FAILED, cp, now=1.0)
    assert late.applied and late.follow.pending == () and not late.follow.context
    live = nodes.complete(_node(NodeStatus.RUNNING), RunStatus.RUNNING, cp, now=1.0)
    assert live.follow.pending == ("b",) and live.follow.touch


def test_a_stale_fence_is_refused_before_anything_is_decided() -> None:
    view = RunView(run_id="r", status=RunStatus.RUNNING, fence=3, progress_at=1.0)
    with pytest.raises(StaleFenceError):
        runs.claim_stall(view, stalled_since=1.0, fence=2, outbox=(), now=2.0)
    claim = runs.claim_stall(view, stalled_since=1.0, fence=3, outbox=(), now=2.0)
    assert claim.applied and claim.reconciled_at == 2.0 and claim.progress


def test_a_timer_wakes_a_parked_node_of_a_live_run_once_due() -> None:
    parked = _node(NodeStatus.WAITING)
    wait = Wait(due_at=10.0)
    early = waits.fire_timer(parked, wait, RunStatus.WAITING, now=9.0, at=9.0, outbox=())
    assert early.verdict is Verdict.REFUSED
    due = waits.fire_timer(parked, wait, RunStatus.WAITING, now=10.0, at=10.0, outbox=())
    assert due.applied and due.wait is not None and due.wait.woken == "timer"
    assert due.follow.wake_run
    finished = waits.fire_timer(parked, wait, RunStatus.CANCELLED, now=10.0, at=10.0, outbox=())
    assert finished.verdict is Verdict.REFUSED


def _node(status: str) -> NodeState:
    return NodeState(run_id="r", node_id="a", status=status, updated_at=time.time())


def _run(run_id: str) -> Run:
    return Run(
        run_id=run_id, blueprint_id="bp", version="1", status="running", input={}, snapshot={}
    )
