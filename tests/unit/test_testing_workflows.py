"""``flowbridge.testing.Runner`` on code workflows: activities, retries, timers, events, cancel.

Workflows and activities register globally by name, so each test names its own.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from flowbridge import ActivityError, WorkflowContext, activity, workflow
from flowbridge.testing import Runner
from state.protocol import StateStore
from state.records import Run, RunStatus
from state.sqlite import SQLiteStore
from tasks.errors import RetryError
from tasks.inprocess import run_queued

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def test_a_saga_books_retries_sleeps_three_days_and_waits_for_an_event() -> None:
    calls: list[tuple[str, ...]] = []
    reserve, flaky, name = unique("reserve"), unique("flaky"), unique("trip")

    @activity(reserve)
    def do_reserve(kind: str) -> str:
        calls.append(("reserve", kind))
        return f"{kind}-ok"

    @activity(flaky, retry={"max_attempts": 3, "initial_interval_s": 30})
    def do_flaky(n: int) -> int:
        calls.append(("flaky", str(n)))
        if sum(1 for c in calls if c[0] == "flaky") < 3:
            raise RuntimeError("try again")
        return n * 2

    @workflow(name)
    async def trip(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
        got = await ctx.all(ctx.activity(do_reserve, "car"), ctx.activity(do_reserve, "hotel"))
        doubled = await ctx.activity(do_flaky, 21)
        await ctx.sleep(timedelta(days=3))
        confirmed = await ctx.wait_event("confirm")
        ctx.emit("trips", {"got": got})
        return {"got": got, "doubled": doubled, "confirmed": confirmed}

    r = Runner()
    run = r.run(name, {})
    assert run["status"] == "waiting", "sleeping three days took no time; now waiting for confirm"
    assert sum(1 for c in calls if c[0] == "flaky") == 3, "two retries after their backoff"
    assert r.clock() >= 3 * 86400

    r.signal(run["run_id"], "confirm", {"ok": 1})
    run = r.result(run["run_id"])
    assert run["status"] == "completed", run
    assert run["output"] == {"got": ["car-ok", "hotel-ok"], "doubled": 42, "confirmed": {"ok": 1}}
    assert r.emitted("trips") == [{"got": ["car-ok", "hotel-ok"]}]


def test_cancel_runs_the_compensation_and_ends_cancelled() -> None:
    undone: list[str] = []
    book, undo, name = unique("book"), unique("undo"), unique("cancel-me")

    @activity(book)
    def do_book(kind: str) -> str:
        return kind

    @activity(undo)
    def do_undo(kind: str) -> None:
        undone.append(kind)

    @workflow(name)
    async def wf(ctx: WorkflowContext, data: Any) -> None:
        booked = [await ctx.activity(do_book, "car")]
        try:
            await ctx.wait_event("never")
        except asyncio.CancelledError:
            for kind in reversed(booked):
                await ctx.activity(do_undo, kind)
            raise

    r = Runner()
    run_id = r.start(name, {})
    assert r.result(run_id)["status"] == "waiting"
    assert r.cancel(run_id, "changed my mind")
    assert r.result(run_id)["status"] == "cancelled"
    assert undone == ["car"]


def test_an_activity_failing_for_good_raises_activity_error_at_the_await() -> None:
    seen: list[str] = []
    bad, name = unique("bad"), unique("catches")

    @activity(bad, retry={"max_attempts": 2, "initial_interval_s": 1})
    def do_bad() -> None:
        raise ValueError("no such card")

    @workflow(name)
    async def wf(ctx: WorkflowContext, data: Any) -> str:
        try:
            await ctx.activity(do_bad)
        except ActivityError as exc:
            seen.append(str(exc))
            return "handled"
        return "not reached"

    r = Runner()
    run = r.run(name, {})
    assert run["output"] == "handled"
    assert seen and "no such card" in seen[0]


def test_emit_checks_its_arguments() -> None:
    name = unique("emits")

    @workflow(name)
    async def wf(ctx: WorkflowContext, data: Any) -> str:
        with pytest.raises(TypeError, match="must be a str"):
            ctx.emit("t", {"a": 1}, raw=True)
        with pytest.raises(TypeError, match="reserves for raw text"):
            ctx.emit("t", {"$flowbridge:text": "x"})
        with pytest.raises(TypeError, match="non-empty string"):
            ctx.emit("", 1)
        with pytest.raises(ValueError, match=r"<number>\.<number>"):
            ctx.ref("1.2")
        ctx.emit("t", "plain text", raw=True)
        ctx.emit("t", "a JSON string")
        return "ok"

    r = Runner()
    assert r.run(name, {})["status"] == "completed"
    assert [(p.value, p.key) for p in r.published if p.topic == "t"] == [
        ("plain text", r.published[-1].key),
        ("a JSON string", r.published[-1].key),
    ]


def test_raw_and_json_values_reach_kafka_as_text_and_as_json() -> None:
    from state.records import OutboxMessage

    raw = OutboxMessage(id="1", topic="t", key=None, value=OutboxMessage.text("0.1"))
    as_json = OutboxMessage(id="2", topic="t", key=None, value="0.1")
    assert raw.wire_value() == b"0.1"
    assert as_json.wire_value() == b'"0.1"'
    assert OutboxMessage(id="3", topic="t", key=None, value={"a": [1, 2]}).wire_value() == (
        b'{"a":[1,2]}'
    )


def test_replay_accepts_unchanged_code_and_names_where_a_change_diverges(tmp_path: Any) -> None:
    import json

    from flowbridge.testing import replay
    from tasks.workflow.api import WorkflowDef, WorkflowRegistry
    from tasks.workflow.replay import replay as replay_with

    step, other, name = unique("step"), unique("other"), unique("replayed")

    @activity(step)
    def do_step(n: int) -> int:
        return n

    @activity(other)
    def do_other(n: int) -> int:
        return n

    @workflow(name)
    async def v1(ctx: WorkflowContext, data: Any) -> int:
        a = await ctx.activity(do_step, 1)
        await ctx.wait_event("go")
        return a + await ctx.activity(do_step, 2)

    async def v2(ctx: WorkflowContext, data: Any) -> int:
        a = await ctx.activity(do_step, 1)
        await ctx.wait_event("go")
        return a + await ctx.activity(do_other, 2)  # renamed the second step

    r = Runner()
    run_id = r.start(name, {})
    r.signal(run_id, "go")
    assert r.result(run_id)["status"] == "completed"
    saved = tmp_path / "history.json"
    saved.write_text(json.dumps(r.export(run_id)))

    same = replay(saved)
    assert same.ok and same.activations >= 3, same

    changed = WorkflowRegistry()
    changed.register(WorkflowDef(name, 1, v2))
    diverged = replay_with(json.loads(saved.read_text()), registry=changed)
    assert not diverged.ok
    assert diverged.activation is not None and diverged.activation >= 2
    assert other in str(diverged.error) and step in str(diverged.error)

    missing = replay_with(json.loads(saved.read_text()), registry=WorkflowRegistry())
    assert not missing.ok and "is not registered" in str(missing.error)


def test_an_activity_nobody_registered_fails_at_the_await_with_what_to_do() -> None:
    name = unique("typo")

    @workflow(name)
    async def wf(ctx: WorkflowContext, data: Any) -> Any:
        return await ctx.activity("chrage-card", 10)

    run = Runner().run(name, {})
    assert run["status"] == "failed"
    assert "no activity 'chrage-card' is registered" in run["error"], run["error"]
    assert "queue=" in run["error"]


def test_a_paused_workflow_starts_nothing_until_resumed_and_is_not_retried() -> None:
    calls: list[str] = []
    step, name = unique("step"), unique("paused")

    @activity(step)
    def do_step(label: str) -> str:
        calls.append(label)
        return label

    @workflow(name)
    async def flow(ctx: WorkflowContext, data: Any) -> list[str]:
        first = await ctx.activity(do_step, "first")
        await ctx.wait_event("go")
        return [first, await ctx.activity(do_step, "second")]

    r = Runner()
    run_id = r.run(name, {})["run_id"]
    assert r.pause(run_id) and r.result(run_id)["status"] == "paused"
    assert not r.pause(run_id), "a second pause is refused"

    r.signal(run_id, "go", {})
    assert calls == ["first"], "the event is kept; the step after it waits for the resume"
    assert r.result(run_id)["status"] == "paused"

    assert r.resume(run_id)
    run = r.result(run_id)
    assert run["status"] == "completed" and run["output"] == ["first", "second"], run
    assert calls == ["first", "second"]
    kinds = [e["kind"] for e in r.history(run_id)]
    assert "run.paused" in kinds and "run.resumed" in kinds

    with pytest.raises(RetryError, match="is a code workflow: retry re-runs blueprint runs"):
        r.retry(run_id)


def test_a_start_rejected_before_the_workflow_was_deployed_starts_it_once_sent_again() -> None:
    name = unique("late")
    r = Runner()
    # What the bridge records for a start that named its run and an unknown workflow.
    rejected = Run(
        run_id="r-late",
        blueprint_id=name,
        version="",
        status=RunStatus.FAILED,
        input={"n": 2},
        snapshot={},
        error=f"rejected: unknown blueprint {name!r}",
    )
    assert r.store.create_run(rejected, start_nodes=())[0]

    @workflow(name)
    async def late(ctx: WorkflowContext, data: Any) -> int:
        return int(data["n"]) * 2

    for _ in range(2):  # a replay of the DLQ record, twice
        r.start(name, {"n": 2}, run_id="r-late")
    run = r.result("r-late")
    assert run["status"] == "completed" and run["output"] == 4, run
    assert [e["kind"] for e in r.history("r-late")].count("run.created") == 2, "rejected, then run"


def test_an_outcome_goes_into_its_activation_and_waits_in_the_inbox_while_paused(
    tmp_path: Path,
) -> None:
    calls: list[str] = []
    step, name = unique("step"), unique("direct")

    @activity(step)
    def do_step(label: str) -> str:
        calls.append(label)
        return label

    @workflow(name)
    async def flow(ctx: WorkflowContext, data: Any) -> list[str]:
        return [await ctx.activity(do_step, "a"), await ctx.activity(do_step, "b")]

    store = SQLiteStore(tmp_path / "state.db")
    r = Runner(store=cast("StateStore", store))
    run_id = r.start(name, {}, drain=False)
    first = r.port.pop_due(advance=False)  # the start's activation: it queues the activity
    assert first is not None and first.activation is not None
    run_queued(r.port, first, r.rt)
    assert r.pause(run_id)
    r.drain()  # the activity runs; its outcome cannot be applied while the run is paused
    assert calls == ["a"]
    state = r.store.workflows.load(run_id)
    assert state is not None and [k for k, _ in state.inbox] == [f"r:{state.gen}.1"]

    assert r.resume(run_id)
    run = r.result(run_id)
    assert run["status"] == "completed" and run["output"] == ["a", "b"], run
    assert calls == ["a", "b"], "the kept outcome was applied, the activity not run again"
    # The second outcome went straight into its activation: no inbox row was ever written
    # for it (the start and the outcome kept while paused are the only rows).
    rows = store._conn().execute("SELECT key FROM wf_inbox WHERE run_id = ?", (run_id,))
    assert sorted(k for (k,) in rows) == ["r:0.1", "s:start"]
