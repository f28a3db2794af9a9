"""Helpers of the fleet suites (tests/e2e/test_scale_out.py, tests/e2e/test_chaos.py).

Runs of ``ledger-fan`` (tests/apps/ledger.py) submitted at a steady rate, their outcome read
from the store and from the ledger (which survives a Redis wipe), the consumer group's lag
on the real broker, and the table the suites print.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.apps.ledger import LEDGER_ENV, LEDGER_NODES, read_ledger
from tests.conftest import E2E_APP, Stack

#: FLOWBRIDGE_APP of the fleet suites: the e2e nodes plus the ledger.
LEDGER_APP = f"{E2E_APP},tests.apps.ledger"
BLUEPRINT = "ledger-fan"


def env_int(name: str, default: int) -> int:
    """An integer from the environment (the suites' sizes: ``make chaos``, ``make scale``)."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def ledger_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The stack environment of a fleet suite: the ledger app and its file in ``tmp_path``."""
    return {"FLOWBRIDGE_APP": LEDGER_APP, LEDGER_ENV: str(tmp_path / "ledger.db"), **extra}


class Submitter(threading.Thread):
    """Start ``runs`` runs of ``ledger-fan`` at ``rate`` per second (ids ``<tag>-<i>``)."""

    def __init__(self, stack: Stack, tag: str, runs: int, rate: float) -> None:
        super().__init__(daemon=True, name=f"submit-{tag}")
        self.stack, self.tag, self.runs, self.rate = stack, tag, runs, rate
        self.ids: list[str] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        began = time.monotonic()
        try:
            for i in range(self.runs):
                # A schedule, not a sleep per run: a slow produce does not lower the rate.
                delay = began + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                run_id = f"{self.tag}-{i}"
                self.stack.client.start(BLUEPRINT, {"i": i}, run_id=run_id)
                self.ids.append(run_id)
        except BaseException as exc:  # reported by the test, which joins the thread
            self.error = exc
        finally:
            self.done.set()

    @property
    def fraction(self) -> float:
        """How much of the runs has been submitted."""
        return len(self.ids) / self.runs


def wait_finished(stack: Stack, ids: Iterable[str], timeout: float) -> dict[str, str]:
    """Each run's status once every run finished, or at ``timeout`` (what was left then)."""
    status: dict[str, str] = {}
    todo = list(ids)
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        left = []
        for run_id in todo:
            run = stack.store.get_run(run_id)
            if run is not None and run.status in ("completed", "failed", "cancelled"):
                status[run_id] = run.status
            else:
                left.append(run_id)
                status[run_id] = "missing" if run is None else run.status
        todo = left
        if todo:
            time.sleep(0.5)
    return status


@dataclass
class Outcome:
    """What became of a suite's runs."""

    runs: int
    completed: int
    #: Runs not completed by the deadline (or failed), or with an effect never applied.
    lost: list[str]
    #: Runs with a node's completion (its state transition) applied twice, or the run's.
    double: list[str]
    #: Executions of node code beyond one per node (at least once: a kill reruns it).
    reexec: int
    #: Seconds from each completed run's creation to its completion.
    durations: list[float] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def slower_than(self, seconds: float) -> int:
        """Completed runs that took longer than ``seconds`` (e.g. recovered only by a stall)."""
        return sum(1 for d in self.durations if d > seconds)

    def row(self, label: str) -> str:
        cells = [label, self.runs, self.completed, len(self.lost), len(self.double), self.reexec]
        cells += list(self.extra.values())
        return " | ".join(str(c) for c in cells)

    def header(self) -> str:
        return " | ".join(["suite", "runs", "completed", "lost", "double", "re-exec", *self.extra])


def outcome(stack: Stack, ids: list[str], status: dict[str, str], ledger: Path) -> Outcome:
    """Read the store's history and the ledger for ``ids`` (after ``wait_finished``)."""
    counts = read_ledger(ledger)
    double: list[str] = []
    lost: list[str] = []
    durations: list[float] = []
    for run_id in ids:
        if status.get(run_id) != "completed" or counts.per_run.get(run_id) != LEDGER_NODES:
            lost.append(run_id)  # unfinished, or an effect of it never applied
            continue
        history = stack.store.get_history(run_id)
        finished = sum(1 for h in history if h.kind == "run.completed")
        per_node: dict[str | None, int] = {}
        for h in history:
            if h.kind == "node.completed":
                per_node[h.node_id] = per_node.get(h.node_id, 0) + 1
        if finished != 1 or any(n != 1 for n in per_node.values()):
            double.append(run_id)
        ends = [h.at for h in history if h.kind in ("run.created", "run.completed")]
        durations.append(max(ends) - min(ends))
    return Outcome(
        runs=len(ids),
        completed=sum(1 for run_id in ids if status.get(run_id) == "completed"),
        lost=lost,
        double=double,
        reexec=counts.calls - counts.effects,
        durations=durations,
    )


def print_table(title: str, rows: list[tuple[str, Outcome]]) -> None:
    """Print outcomes as a Markdown table (``-s`` shows it; docs/capacity.md quotes it)."""
    print(f"\n{title}")
    print(f"| {rows[0][1].header()} |")
    print("|" + "---|" * (6 + len(rows[0][1].extra)))
    for label, row in rows:
        print(f"| {row.row(label)} |")


def load_averages() -> str:
    """The machine's 1/5/15-minute load averages (2 cores, shared: the figures depend on it)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
