"""One workflow run in memory: replay its history, apply new inputs, collect the commands.

A ``Machine`` lives for one activation and is then torn down (v1 always
replays: non-determinism shows on the next step in development, not at a
recovery months later). It never touches the store or the queue: it turns
``(history, new inputs)`` into the new activation's commands and outcome, and
``tasks.workflow.activation`` commits and dispatches them.

Rules it keeps (``../shared/WORKFLOWS.md`` §0): inputs are applied in
recorded order, one activation at a time; a suspended ``await`` is a pending
future, not an exception; commands are matched on ``(seq, type, name)``
on replay; teardown closes every coroutine with durable calls raising
``WorkflowEvicted``, so no frame is left to the garbage collector.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.workflow.errors import (
    ActivityError,
    ChildWorkflowError,
    ContinueAsNew,
    NonDeterminismError,
    NonDeterministicCallError,
    RefError,
    WorkflowEvicted,
)
from tasks.workflow.history import Activation, Command, Input, args_digest
from tasks.workflow.loop import DurableTimer, WorkflowLoop

if TYPE_CHECKING:
    from tasks.workflow.api import WorkflowDef

__all__ = ["ActivationResult", "DurableFuture", "Machine"]

log = logging.getLogger("flowbridge.workflow")

#: Drains of the loop teardown allows before it gives up on a coroutine that keeps running.
TEARDOWN_ROUNDS = 100


class DurableFuture(asyncio.Future[Any]):
    """What a durable call returns: resolved by an input, cancelled by a cancel command."""

    def __init__(self, machine: Machine, seq: int, kind: str) -> None:
        """The future of durable call ``seq`` of type ``kind``."""
        super().__init__(loop=machine.loop)
        self._machine = machine
        self.seq = seq
        self.kind = kind

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the durable call too (a cancel command), unless it already settled."""
        if not self.done():
            self._machine._cancelled(self)
        return super().cancel(msg)


@dataclass
class ActivationResult:
    """What one live activation produced."""

    commands: list[Command]
    #: None while the run goes on; else ``completed``, ``failed``, ``cancelled``, ``continue``.
    outcome: str | None = None
    output: Any = None
    error: str | None = None
    #: Set when the run cannot go on without a code change (nothing may be committed).
    blocked: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


class Machine:
    """The state of one run of one workflow, rebuilt from its history for one activation."""

    def __init__(self, defn: WorkflowDef, *, run_id: str, gen: int = 0) -> None:
        """Prepare to run ``defn`` as run ``run_id``, generation ``gen``."""
        from tasks.workflow.context import WorkflowContext

        self.defn = defn
        self.run_id = run_id
        self.gen = gen
        # Its I/O methods are set on the class (each raises): mypy cannot see them.
        self.loop = WorkflowLoop(0.0)  # type: ignore[abstract]
        self.loop.on_timer = self._on_timer
        self.loop.on_timer_cancelled = self._on_timer_cancelled
        self.ctx = WorkflowContext(self)
        self.rng = random.Random(f"{run_id}:{gen}")
        self.next_seq = 1
        self.n = 0
        self.replaying = False
        self.evicted = False
        self.input: Any = None
        self.produced: list[Command] = []
        self._expected: Sequence[Command] = ()
        self.pending: dict[int, DurableFuture] = {}
        self.timers: dict[int, DurableTimer] = {}
        self.waits: dict[str, collections.deque[int]] = collections.defaultdict(collections.deque)
        self.mailbox: dict[str, collections.deque[Any]] = collections.defaultdict(collections.deque)
        self.refs: dict[str, int] = {}
        self.early_refs: dict[str, collections.deque[Input]] = collections.defaultdict(
            collections.deque
        )
        self.patches: dict[str, bool] = {}
        self.main: asyncio.Task[Any] | None = None
        self.warnings: list[str] = []
        self.replay_warnings: list[str] = []
        self._ended = False

    # --- driving ----------------------------------------------------------------------------
    def replay(self, history: Sequence[Activation]) -> None:
        """Run the recorded activations again; raise ``NonDeterminismError`` on a divergence."""
        for act in history:
            self._run(act.inputs, act.at, expected=act.commands)
            self._compare(act)
        # What replay noticed was recorded when it happened; only new warnings are reported.
        self.replay_warnings, self.warnings = self.warnings, []

    def advance(self, inputs: Sequence[Input], *, at: float) -> ActivationResult:
        """Apply new inputs as the next activation; its commands and outcome."""
        try:
            self._run(inputs, at, expected=None)
        except NonDeterministicCallError as exc:
            return ActivationResult([], blocked={"error": str(exc), "activation": self.n})
        result = ActivationResult(list(self.produced), warnings=list(self.warnings))
        end = next((c for c in self.produced if c.type in _ENDS), None)
        if end is not None:
            result.outcome = _ENDS[end.type]
            result.output = end.payload.get("output", end.payload.get("input"))
            result.error = end.payload.get("error")
            if end.type == "blocked":
                result.blocked = end.payload
                result.commands = []
        return result

    def _run(
        self, inputs: Sequence[Input], at: float, *, expected: Sequence[Command] | None
    ) -> None:
        self.n += 1
        self.loop.set_time(at)
        self.produced = []
        self.replaying = expected is not None
        self._expected = expected or ()
        for item in inputs:
            self._apply(item)
        self.loop.run_ready()

    def _compare(self, act: Activation) -> None:
        recorded, produced = list(act.commands), self.produced
        for i in range(max(len(recorded), len(produced))):
            want = recorded[i] if i < len(recorded) else None
            got = produced[i] if i < len(produced) else None
            if want is not None and got is not None and want.signature() == got.signature():
                if want.digest != got.digest:
                    self.warnings.append(
                        f"activation {act.n}: {got.describe()} has other arguments than recorded"
                    )
                continue
            seq = (want or got).seq if (want or got) is not None else None  # type: ignore[union-attr]
            raise NonDeterminismError(
                f"replaying activation {act.n}: the code "
                + (
                    f"issued {got.describe()} where the history has {want.describe()}"
                    if want is not None and got is not None
                    else f"did not issue {want.describe()}"
                    if want is not None
                    else f"issued {got.describe()}, which the history does not have"  # type: ignore[union-attr]
                )
                + " (deploy the code the run started with, or guard the change with ctx.patched)",
                activation=act.n,
                seq=seq,
                expected=None if want is None else want.to_json(),
                got=None if got is None else got.to_json(),
            )

    def teardown(self) -> None:
        """Close every coroutine of the run: durable calls raise ``WorkflowEvicted`` meanwhile."""
        self.evicted = True
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for _ in range(TEARDOWN_ROUNDS):
            if not tasks:
                break
            for t in tasks:
                t.cancel()
            self.loop.run_ready()
            tasks = [t for t in tasks if not t.done()]
        for t in asyncio.all_tasks(self.loop):
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: no "exception was never retrieved" at GC
        self.loop.close()

    # --- inputs -----------------------------------------------------------------------------
    def _apply(self, item: Input) -> None:
        if item.gen is not None and item.gen != self.gen:
            self.warnings.append(f"{item.type} {item.key} of generation {item.gen} ignored")
            return
        if item.type == "start":
            self.input = item.value
            self.main = self.loop.create_task(
                self._main(item.value), name=f"workflow {self.run_id}"
            )
            self.main.add_done_callback(self._ended_with)
        elif item.type == "result":
            fut = self.pending.pop(item.seq or -1, None)
            if fut is None or fut.done():
                self.warnings.append(f"a late result for seq {item.seq} was ignored")
            elif item.error is not None:
                fut.set_exception(_error_of(fut, item))
            else:
                fut.set_result(item.value)
        elif item.type == "timer":
            handle = self.timers.pop(item.seq or -1, None)
            if handle is not None:
                self.loop.fire(handle)
        elif item.type == "event":
            self._deliver_event(str(item.name), item.value)
        elif item.type == "ref":
            self._deliver_ref(item)
        elif item.type == "cancel":
            if self.main is not None and not self.main.done():
                self.main.cancel(item.value)
        else:  # pragma: no cover - inputs are written by flowbridge only
            self.warnings.append(f"unknown input type {item.type!r} ignored")

    def _deliver_event(self, name: str, payload: Any) -> None:
        waiting = self.waits[name]
        while waiting:
            fut = self.pending.pop(waiting.popleft(), None)
            if fut is not None and not fut.done():
                fut.set_result(payload)
                return
        self.mailbox[name].append(payload)

    def _deliver_ref(self, item: Input) -> None:
        ref_id = str(item.id)
        seq = self.refs.pop(ref_id, None)
        fut = None if seq is None else self.pending.pop(seq, None)
        if fut is None or fut.done():
            if _is_auto_ref(ref_id):
                self.warnings.append(f"ref {ref_id!r} is not awaited (settled or unknown): ignored")
            else:
                # A user-named ref not created yet: it takes this when it is.
                self.early_refs[ref_id].append(item)
            return
        _settle_ref(fut, item)

    # --- durable calls (from the context) ----------------------------------------------------
    def issue(self, type: str, name: str = "", payload: dict[str, Any] | None = None) -> int:
        """Record a command with the next seq; returns the seq."""
        if self.evicted:
            raise WorkflowEvicted
        seq = self.next_seq
        self.next_seq += 1
        body = payload or {}
        digest = args_digest(body.get("args", body)) if type in ("activity", "child") else ""
        self.produced.append(Command(seq=seq, type=type, name=name, digest=digest, payload=body))
        return seq

    def future(self, seq: int, kind: str) -> DurableFuture:
        """The future of durable call ``seq``, pending until its input arrives."""
        fut = DurableFuture(self, seq, kind)
        self.pending[seq] = fut
        return fut

    def recorded(self, seq: int, type: str) -> Command | None:
        """On replay: the recorded command of this activation with ``seq`` and ``type``."""
        return next((c for c in self._expected if c.seq == seq and c.type == type), None)

    def wait_event(self, name: str) -> DurableFuture:
        """Issue a wait for event ``name``; an event already in the mailbox resolves it at once."""
        seq = self.issue("wait", name)
        fut = DurableFuture(self, seq, "wait")
        if self.mailbox[name]:
            fut.set_result(self.mailbox[name].popleft())
        else:
            self.pending[seq] = fut
            self.waits[name].append(seq)
        return fut

    def ref(self, ref_id: str | None) -> tuple[str, DurableFuture]:
        """Issue a ref (``<gen>.<seq>`` unless named); a resume that came first settles it."""
        seq = self.next_seq
        bad_name = not isinstance(ref_id, str) or not ref_id or _is_auto_ref(ref_id)
        if ref_id is not None and bad_name:
            raise ValueError(
                f"ctx.ref({ref_id!r}): a ref's name is a non-empty string that is not of the "
                "form <number>.<number> (those are the ids flowbridge gives unnamed refs)"
            )
        name = ref_id if ref_id is not None else f"{self.gen}.{seq}"
        if name in self.refs:
            raise ValueError(f"ref {name!r} is awaited already; await it, or name another")
        self.issue("ref", name)
        fut = DurableFuture(self, seq, "ref")
        early = self.early_refs.get(name)
        if early:
            _settle_ref(fut, early.popleft())
        else:
            self.pending[seq] = fut
            self.refs[name] = seq
        return name, fut

    def end(self, type: str, **payload: Any) -> None:
        """Record the run's end (once)."""
        if self._ended or self.evicted:
            return
        self._ended = True
        self.produced.append(Command(seq=None, type=type, payload=payload))

    def _cancelled(self, fut: DurableFuture) -> None:
        self.pending.pop(fut.seq, None)
        if fut.kind == "wait":
            for queue in self.waits.values():
                if fut.seq in queue:
                    queue.remove(fut.seq)
        elif fut.kind == "ref":
            self.refs = {k: v for k, v in self.refs.items() if v != fut.seq}
        if not self.evicted and fut.kind in ("activity", "child"):
            self.produced.append(Command(seq=fut.seq, type="cancel", name=fut.kind))

    def _on_timer(self, handle: DurableTimer) -> int:
        seq = self.issue("timer", "", {"fire_at": handle.when()})
        self.timers[seq] = handle
        return seq

    def _on_timer_cancelled(self, handle: DurableTimer) -> None:
        if self.timers.pop(handle.seq, None) is not None and not self.evicted:
            self.produced.append(Command(seq=handle.seq, type="cancel", name="timer"))

    # --- the run's main coroutine -----------------------------------------------------------
    async def _main(self, value: Any) -> Any:
        return await self.defn.fn(self.ctx, value)

    def _ended_with(self, task: asyncio.Task[Any]) -> None:
        if self.evicted:
            return
        if task.cancelled():
            self.end("cancelled", error="cancelled")
            return
        exc = task.exception()
        if exc is None:
            output = task.result()
            try:
                json.dumps(output)
            except (TypeError, ValueError) as err:
                self.end("fail", error=f"the workflow's result is not JSON-serializable: {err}")
                return
            self.end("complete", output=output)
        elif isinstance(exc, ContinueAsNew):
            if self.pending or self.timers:
                self.end(
                    "fail",
                    error=f"continue_as_new with {len(self.pending) + len(self.timers)} durable "
                    "call(s) still pending: await or cancel them first",
                )
            else:
                self.end("continue", input=exc.input)
        elif isinstance(exc, NonDeterministicCallError):
            self.end("blocked", error=str(exc), activation=self.n)
        elif isinstance(exc, WorkflowEvicted):
            pass
        else:
            # ``message`` is the exception's own text: kafka-workflow's error topic carries it.
            self.end("fail", error=_describe(exc), message=str(exc) or type(exc).__name__)

    # --- combinators ------------------------------------------------------------------------
    async def all(self, aws: Sequence[Awaitable[Any]]) -> list[Any]:
        """Run in argument order; all results, or the first failure (the rest cancelled)."""
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(a, loop=self.loop) for a in aws]
        first = await self._first(tasks, stop_on_success=False)
        if first is not None:
            _cancel_others(tasks, first)
            return [first.result()]  # raises the failure
        return [t.result() for t in tasks]

    async def race(self, aws: Sequence[Awaitable[Any]]) -> tuple[int, Any]:
        """The first to settle wins (index and result, or its failure); the rest are cancelled."""
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(a, loop=self.loop) for a in aws]
        winner = await self._first(tasks, stop_on_success=True)
        assert winner is not None
        _cancel_others(tasks, winner)
        return tasks.index(winner), winner.result()

    async def _first(
        self, tasks: list[asyncio.Future[Any]], *, stop_on_success: bool
    ) -> asyncio.Future[Any] | None:
        """Wait for the first task that decides: a failure, or with ``stop_on_success`` any."""
        waiter: asyncio.Future[asyncio.Future[Any] | None] = self.loop.create_future()
        left = len(tasks)

        def done(t: asyncio.Future[Any]) -> None:
            nonlocal left
            if waiter.done():
                return
            left -= 1
            failed = t.cancelled() or t.exception() is not None
            if failed or stop_on_success:
                waiter.set_result(t)
            elif left == 0:
                waiter.set_result(None)

        for t in tasks:
            t.add_done_callback(done)
        if not tasks:
            return None
        try:
            return await waiter
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            raise


_ENDS = {
    "complete": "completed",
    "fail": "failed",
    "cancelled": "cancelled",
    "continue": "continue",
    "blocked": "blocked",
}


def _cancel_others(tasks: list[asyncio.Future[Any]], keep: asyncio.Future[Any]) -> None:
    for t in tasks:
        if t is not keep and not t.done():
            t.cancel()


def _settle_ref(fut: DurableFuture, item: Input) -> None:
    if item.error is not None:
        fut.set_exception(RefError(item.error))
    else:
        fut.set_result(item.value)


def _is_auto_ref(ref_id: str) -> bool:
    """Whether an id has the form of an unnamed ref's (``<gen>.<seq>``, of any generation)."""
    head, _, tail = ref_id.partition(".")
    return head.isdigit() and tail.isdigit()


def _error_of(fut: DurableFuture, item: Input) -> BaseException:
    err = item.error if isinstance(item.error, dict) else {"message": str(item.error)}
    if fut.kind == "child":
        return ChildWorkflowError(str(err.get("run_id", "")), str(err.get("message")))
    return ActivityError(
        str(err.get("name", "?")), str(err.get("message")), type=str(err.get("type", "Exception"))
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def call_name(target: str | Callable[..., Any] | Any) -> str:
    """The task name of an activity given by name, ``@activity`` function or Celery task."""
    if isinstance(target, str):
        return target
    name = getattr(target, "__flowbridge_activity__", None) or getattr(target, "name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"ctx.activity needs an activity name, an @activity function or a Celery task, "
            f"not {target!r}"
        )
    return name
