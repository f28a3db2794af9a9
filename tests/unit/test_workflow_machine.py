"""The workflow machine: replay, determinism, cancellation, combinators, refs, events, timers.

Pure: a small driver plays the part of the store and the queue, so each test
says what arrives in which activation and checks what the code commands.
Every step replays the whole history first, as production does.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.workflow import (
    Activation,
    ActivationResult,
    ActivityError,
    Command,
    Input,
    Machine,
    NonDeterminismError,
    RefError,
    WorkflowDef,
    WorkflowDefinitionError,
    workflow,
)

Fn = Callable[..., Any]
_keys = itertools.count()


def wf(fn: Fn, name: str = "w") -> WorkflowDef:
    return WorkflowDef(name, 1, fn)


class Sim:
    """Plays store and queue for one run: keeps the history, knows what is outstanding."""

    def __init__(self, defn: WorkflowDef, *, run_id: str = "run-1", now: float = 1_000.0) -> None:
        self.defn = defn
        self.run_id = run_id
        self.now = now
        self.history: list[Activation] = []
        self.open: dict[int, Command] = {}
        self.emitted: list[tuple[str, Any]] = []
        self.result: ActivationResult | None = None

    def step(self, *inputs: Input, defn: WorkflowDef | None = None) -> ActivationResult:
        m = Machine(defn or self.defn, run_id=self.run_id)
        try:
            m.replay(self.history)
            res = m.advance(list(inputs), at=self.now)
        finally:
            m.teardown()
        assert not m.loop.errors, m.loop.errors
        if res.blocked is None:
            self.history.append(
                Activation(
                    n=len(self.history) + 1,
                    at=self.now,
                    inputs=tuple(inputs),
                    commands=tuple(res.commands),
                )
            )
            for c in res.commands:
                if c.type in ("activity", "timer", "wait", "ref", "child"):
                    self.open[c.seq] = c  # type: ignore[index]
                elif c.type == "cancel":
                    self.open.pop(c.seq, None)  # type: ignore[arg-type]
                elif c.type == "emit":
                    self.emitted.append((c.name, c.payload["value"]))
        self.result = res
        return res

    def start(self, value: Any = None) -> ActivationResult:
        return self.step(Input(key="s:start", type="start", value=value))

    def seq_of(self, type: str, name: str = "") -> int:
        for seq, c in sorted(self.open.items()):
            if c.type == type and (not name or c.name == name):
                return seq
        raise AssertionError(f"no open {type} {name!r}: {self.open}")

    def result_input(self, name: str, value: Any = None, *, error: str | None = None) -> Input:
        seq = self.seq_of("activity", name)
        self.open.pop(seq)
        err = None if error is None else {"name": name, "message": error, "type": "Boom"}
        return Input(key=f"r:{seq}", type="result", seq=seq, value=value, error=err)

    def complete(
        self, name: str, value: Any = None, *, error: str | None = None
    ) -> ActivationResult:
        return self.step(self.result_input(name, value, error=error))

    def timer_input(self) -> Input:
        seq = min(
            (s for s, c in self.open.items() if c.type == "timer"),
            key=lambda s: self.open[s].payload["fire_at"],
        )
        self.now = max(self.now, self.open[seq].payload["fire_at"])
        self.open.pop(seq)
        return Input(key=f"t:{seq}", type="timer", seq=seq)

    def fire_timer(self) -> ActivationResult:
        return self.step(self.timer_input())

    def event(self, name: str, payload: Any = None) -> ActivationResult:
        return self.step(Input(key=f"e:{next(_keys)}", type="event", name=name, value=payload))

    def ref(self, ref_id: str, value: Any = None, *, error: Any = None) -> ActivationResult:
        return self.step(
            Input(key=f"ref:{next(_keys)}", type="ref", id=ref_id, value=value, error=error)
        )

    def cancel(self) -> ActivationResult:
        return self.step(Input(key="x:cancel", type="cancel", value="by request"))

    def kinds(self) -> list[str]:
        assert self.result is not None
        return [f"{c.type}:{c.name}" for c in self.result.commands]


# --- the trip-booking saga of ../shared/WORKFLOWS.md §1 --------------------------------------
async def book_trip(ctx: Any, trip: dict[str, Any]) -> dict[str, Any]:
    undo: list[tuple[str, str]] = []

    async def book(kind: str) -> Any:
        key = f"{ctx.run_id}:{kind}"
        undo.append((f"cancel-{kind}", key))  # before awaiting: a cancelled call may have run
        return await ctx.activity(f"reserve-{kind}", trip, key)

    try:
        winner, got = await ctx.race(
            booked=ctx.all(book("car"), book("hotel"), book("flight")),
            expired=ctx.sleep(timedelta(hours=2)),
        )
        if winner == "expired":
            raise TimeoutError("booking window closed")
        await ctx.wait_event("customer-confirmed", timeout=timedelta(days=3))
        return dict(zip(["car", "hotel", "flight"], got, strict=True))
    except (ActivityError, TimeoutError, asyncio.CancelledError):
        for name, key in reversed(undo):
            await ctx.activity(name, key)
        raise


TRIP = wf(book_trip, "trip-booking")


def test_the_saga_books_everything_and_completes_after_confirmation() -> None:
    sim = Sim(TRIP)
    sim.start({"to": "Lisbon"})
    assert sim.kinds() == [
        "timer:",
        "activity:reserve-car",
        "activity:reserve-hotel",
        "activity:reserve-flight",
    ]
    sim.complete("reserve-flight", "F1")
    sim.complete("reserve-car", "C1")
    res = sim.complete("reserve-hotel", "H1")
    assert "cancel:timer" in sim.kinds(), "the race's loser (the 2 h timer) is cancelled"
    assert res.outcome is None, "it waits for the confirmation"
    res = sim.event("customer-confirmed", {"by": "ann"})
    assert res.outcome == "completed"
    assert res.output == {"car": "C1", "hotel": "H1", "flight": "F1"}


def test_a_failed_reservation_cancels_the_others_and_compensates_in_reverse() -> None:
    sim = Sim(TRIP)
    sim.start({})
    sim.complete("reserve-car", "C1")
    sim.complete("reserve-hotel", error="no rooms")
    # The pending flight is cancelled; compensation runs in reverse registration order.
    assert "cancel:activity" in sim.kinds()
    assert [k for k in sim.kinds() if k.startswith("activity")] == ["activity:cancel-flight"]
    sim.complete("cancel-flight")
    assert sim.kinds() == ["activity:cancel-hotel"]
    sim.complete("cancel-hotel")
    assert sim.kinds() == ["activity:cancel-car"]
    res = sim.complete("cancel-car")
    assert res.outcome == "failed"
    assert "no rooms" in (res.error or "")


def test_the_booking_window_closing_cancels_the_pending_reservations() -> None:
    sim = Sim(TRIP)
    sim.start({})
    sim.complete("reserve-car", "C1")
    res = sim.fire_timer()
    cancelled = [c.seq for c in res.commands if c.type == "cancel"]
    assert len(cancelled) == 2, "hotel and flight are cancelled (revoked)"
    assert "activity:cancel-flight" in sim.kinds()
    sim.complete("cancel-flight")
    sim.complete("cancel-hotel")
    res = sim.complete("cancel-car")
    assert res.outcome == "failed"
    assert res.error == "TimeoutError: booking window closed"


def test_a_run_cancel_is_one_cancelled_error_at_the_current_await_and_compensation_runs() -> None:
    sim = Sim(TRIP)
    sim.start({})
    sim.complete("reserve-car", "C1")
    res = sim.cancel()
    assert "activity:cancel-flight" in sim.kinds(), "except CancelledError runs the compensation"
    assert res.outcome is None
    sim.complete("cancel-flight")
    sim.complete("cancel-hotel")
    res = sim.complete("cancel-car")
    assert res.outcome == "cancelled"


def test_a_late_result_of_a_cancelled_activity_is_recorded_and_ignored() -> None:
    sim = Sim(TRIP)
    sim.start({})
    hotel = sim.seq_of("activity", "reserve-hotel")
    sim.complete("reserve-car", error="no cars")
    res = sim.step(Input(key=f"r:{hotel}", type="result", seq=hotel, value="H-late"))
    assert res.warnings and "late result" in res.warnings[-1]
    assert not [c for c in res.commands if c.name == "cancel-hotel" and c.type == "activity"][1:]


# --- replay and determinism -------------------------------------------------------------------
def test_every_prefix_of_a_history_replays_to_the_same_commands() -> None:
    sim = Sim(TRIP)
    sim.start({})
    sim.complete("reserve-flight", "F")
    sim.complete("reserve-car", "C")
    sim.complete("reserve-hotel", "H")
    sim.event("customer-confirmed")
    for k in range(1, len(sim.history) + 1):
        m = Machine(TRIP, run_id=sim.run_id)
        m.replay(sim.history[:k])  # raises on any difference
        m.teardown()


def test_a_renamed_activity_is_non_determinism_reported_with_what_was_expected() -> None:
    sim = Sim(TRIP)
    sim.start({})

    async def renamed(ctx: Any, trip: Any) -> Any:
        return await ctx.all(
            ctx.activity("reserve-auto", trip), ctx.activity("reserve-hotel", trip)
        )

    m = Machine(wf(renamed, "trip-booking"), run_id=sim.run_id)
    with pytest.raises(NonDeterminismError) as info:
        m.replay(sim.history)
    m.teardown()
    err = info.value
    assert err.activation == 1
    assert err.expected["type"] == "timer"
    assert err.got == {
        "seq": 1,
        "type": "activity",
        "name": "reserve-auto",
        "digest": err.got["digest"],
        "payload": err.got["payload"],
    }
    assert "ctx.patched" in str(err)
    report = err.report()
    assert report["activation"] == 1 and report["expected"] and report["produced"]


def test_a_removed_call_and_an_added_call_are_both_non_determinism() -> None:
    async def two(ctx: Any, _: Any) -> Any:
        await ctx.activity("a")
        await ctx.activity("b")

    async def one(ctx: Any, _: Any) -> Any:
        await ctx.activity("a")

    async def three(ctx: Any, _: Any) -> Any:
        await ctx.activity("a")
        ctx.emit("t", 1)
        await ctx.activity("b")

    sim = Sim(wf(two))
    sim.start()
    sim.complete("a")
    for changed in (one, three):
        m = Machine(wf(changed), run_id=sim.run_id)
        with pytest.raises(NonDeterminismError, match="activation 2"):
            m.replay(sim.history)
        m.teardown()


def test_changed_arguments_only_warn() -> None:
    async def v1(ctx: Any, _: Any) -> Any:
        return await ctx.activity("a", 1)

    async def v2(ctx: Any, _: Any) -> Any:
        return await ctx.activity("a", 2)

    sim = Sim(wf(v1))
    sim.start()
    m = Machine(wf(v2), run_id=sim.run_id)
    m.replay(sim.history)
    m.teardown()
    assert any("other arguments" in w for w in m.replay_warnings)


def test_patched_keeps_old_runs_on_the_old_path_and_new_runs_on_the_new_one() -> None:
    async def old(ctx: Any, _: Any) -> Any:
        await ctx.activity("a")
        return await ctx.activity("b")

    async def new(ctx: Any, _: Any) -> Any:
        await ctx.activity("a")
        if ctx.patched("use-c"):
            return await ctx.activity("c")
        return await ctx.activity("b")

    started_old = Sim(wf(old))
    started_old.start()
    started_old.complete("a")
    assert started_old.kinds() == ["activity:b"]
    res = started_old.step(started_old.result_input("b", "B"), defn=wf(new))
    assert res.outcome == "completed" and res.output == "B", "the old run replays its old path"

    fresh = Sim(wf(new))
    fresh.start()
    fresh.complete("a")
    assert fresh.kinds() == ["marker:use-c", "activity:c"]
    assert fresh.complete("c", "C").output == "C"


def test_now_random_and_uuid4_are_the_same_on_every_replay() -> None:
    seen: list[Any] = []

    async def draw(ctx: Any, _: Any) -> Any:
        values = [ctx.now(), ctx.random(), str(ctx.uuid4())]
        seen.append(values)
        await ctx.activity("a")
        return values

    sim = Sim(wf(draw))
    sim.start()
    sim.now += 50
    res = sim.complete("a")
    assert seen[0] == seen[1], "the replay in activation 2 saw what activation 1 saw"
    assert res.output == seen[0]
    assert res.output[0] == 1_000.0


def test_side_effect_runs_once_live_and_replays_its_recorded_value() -> None:
    calls: list[int] = []

    async def once(ctx: Any, _: Any) -> Any:
        token = ctx.side_effect(lambda: calls.append(1) or f"token-{len(calls)}")
        await ctx.activity("use", token)
        return token

    sim = Sim(wf(once))
    sim.start()
    res = sim.complete("use")
    assert calls == [1]
    assert res.output == "token-1"


def test_a_suspended_await_is_not_an_exception_a_users_except_exception_could_swallow() -> None:
    caught: list[BaseException] = []

    async def careful(ctx: Any, _: Any) -> Any:
        try:
            return await ctx.wait_event("go")
        except Exception as exc:  # a saga's broad handler must not fire on every wait
            caught.append(exc)
            raise

    sim = Sim(wf(careful))
    sim.start()
    assert sim.event("go", 42).output == 42
    assert caught == []


# --- combinators, timers, refs and events ----------------------------------------------------
def test_asyncio_sleep_timeout_and_gather_become_durable() -> None:
    async def native(ctx: Any, _: Any) -> Any:
        await asyncio.sleep(3600)
        try:
            async with asyncio.timeout(60):
                await ctx.wait_event("never")
        except TimeoutError:
            pass
        return await asyncio.gather(ctx.activity("a"), ctx.activity("b"))

    sim = Sim(wf(native))
    sim.start()
    assert sim.kinds() == ["timer:"]
    assert sim.result.commands[0].payload["fire_at"] == 1_000.0 + 3600  # type: ignore[union-attr]
    sim.fire_timer()
    assert sim.kinds() == ["timer:", "wait:never"]
    sim.fire_timer()
    assert sim.kinds() == ["activity:a", "activity:b"]
    sim.complete("b", 2)
    assert sim.complete("a", 1).output == [1, 2]


def test_race_settles_on_the_first_failure_too() -> None:
    async def racing(ctx: Any, _: Any) -> Any:
        try:
            return await ctx.race(ctx.activity("slow"), ctx.activity("fails"))
        except ActivityError as exc:
            return f"lost: {exc.message}"

    sim = Sim(wf(racing))
    sim.start()
    res = sim.complete("fails", error="down")
    assert res.output == "lost: down"
    assert "cancel:activity" in sim.kinds(), "the slow activity is revoked"


def test_refs_resume_with_values_and_errors_and_named_refs_can_come_early_or_repeat() -> None:
    async def kw(ctx: Any, _: Any) -> Any:
        auto = ctx.ref()
        ctx.emit("requests", auto.id)
        first = await auto
        got = []
        for _round in range(2):
            got.append(await ctx.ref("main"))
        try:
            await ctx.ref("fails")
        except RefError as exc:
            got.append(f"error {exc}")
        return [first, got]

    sim = Sim(wf(kw))
    sim.start()
    ref_id = sim.emitted[0][1]
    assert ref_id == "0.1"
    sim.ref("main", "early")  # before ctx.ref("main") exists: kept for it
    sim.ref("0.99", "nobody")  # an id of this generation's form nobody awaits: warned, ignored
    assert sim.result and "not awaited" in sim.result.warnings[-1]
    sim.ref(ref_id, "A")
    sim.ref("main", "second")
    res = sim.ref("fails", error="hotel is not available")
    assert res.output == ["A", ["early", "second", "error hotel is not available"]]


def test_an_event_that_came_before_its_wait_is_kept_and_a_wait_can_time_out() -> None:
    async def waits(ctx: Any, _: Any) -> Any:
        await ctx.activity("prepare")
        early = await ctx.wait_event("approved")
        try:
            await ctx.wait_event("second", timeout=timedelta(days=3))
        except TimeoutError:
            return [early, "timed out"]
        return [early, "came"]

    sim = Sim(wf(waits))
    sim.start()
    sim.event("approved", {"by": "ann"})
    res = sim.complete("prepare")
    assert sim.kinds() == ["wait:approved", "wait:second", "timer:"]
    sim.now += 3 * 86400
    res = sim.fire_timer()
    assert res.output == [{"by": "ann"}, "timed out"]


def test_forbidden_calls_block_the_run_instead_of_committing() -> None:
    async def io(ctx: Any, _: Any) -> Any:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, print, "x")

    sim = Sim(wf(io))
    res = sim.start()
    assert res.blocked is not None and "run_in_executor" in res.blocked["error"]
    assert sim.history == [], "nothing is committed"


def test_registration_refuses_what_replay_cannot_repeat() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"time\.time.*ctx\.now"):

        @workflow("bad-clock")
        async def bad(ctx: Any, _: Any) -> Any:
            import time

            return time.time()

    with pytest.raises(WorkflowDefinitionError, match=r"async def"):

        @workflow("not-async")
        def sync(ctx: Any, _: Any) -> Any:  # type: ignore[misc]
            return None

    with pytest.raises(WorkflowDefinitionError, match=r"asyncio\.wait"):

        @workflow("sets")
        async def sets(ctx: Any, _: Any) -> Any:
            await asyncio.wait([ctx.activity("a")])


def test_continue_as_new_ends_the_generation_with_the_next_input() -> None:
    async def counter(ctx: Any, n: int) -> Any:
        await ctx.activity("tick", n)
        if n < 3:
            ctx.continue_as_new(n + 1)
        return n

    sim = Sim(wf(counter))
    sim.start(1)
    res = sim.complete("tick")
    assert res.outcome == "continue" and res.output == 2


def test_teardown_leaves_no_pending_coroutine_for_the_garbage_collector(recwarn: Any) -> None:
    async def many(ctx: Any, _: Any) -> Any:
        async def branch(i: int) -> Any:
            try:
                return await ctx.activity(f"a{i}")
            finally:
                ctx.emit("cleanup", i)  # during teardown: WorkflowEvicted, nothing emitted

        return await ctx.all(*(branch(i) for i in range(5)))

    sim = Sim(wf(many))
    sim.start()
    sim.complete("a0")
    gc.collect()
    assert not [w for w in recwarn if "destroyed" in str(w.message) or "never" in str(w.message)]
    # a0's finally ran live; the four branches torn down emitted nothing.
    assert sim.emitted == [("cleanup", 0)]


# --- arrival orders (property-based) -----------------------------------------------------------
async def fan_in(ctx: Any, n: int) -> Any:
    """Fan out n activities, race a timer against an event, gather everything."""
    parts = await ctx.all(*(ctx.activity(f"part-{i}", i) for i in range(n)))
    which, _ = await ctx.race(ctx_event=ctx.wait_event("go"), timer=ctx.sleep(60))
    return {"sum": sum(parts), "which": which}


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(list(range(5))),
    batches=st.lists(st.integers(min_value=1, max_value=3), min_size=5, max_size=5),
    event_first=st.booleans(),
)
def test_any_arrival_order_and_batching_gives_the_same_outcome_live_and_replayed(
    order: list[int], batches: list[int], event_first: bool
) -> None:
    sim = Sim(wf(fan_in))
    sim.start(5)
    if event_first:
        sim.event("go")  # early: kept in the mailbox
    pending = [sim.result_input(f"part-{i}", i * 10) for i in order]
    i = 0
    for size in batches:
        if i >= len(pending):
            break
        sim.step(*pending[i : i + size])
        i += size
    if i < len(pending):
        sim.step(*pending[i:])
    res = sim.event("go") if not event_first else sim.result
    assert res is not None and res.outcome == "completed", res
    assert res.output == {"sum": 100, "which": "ctx_event"}
    # The whole history replays without a difference, whatever the order.
    m = Machine(wf(fan_in), run_id=sim.run_id)
    m.replay(sim.history)
    m.teardown()
