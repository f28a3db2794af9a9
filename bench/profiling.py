"""Profiles of flowbridge's processes with py-spy, and where their time goes.

py-spy attaches to a running process (and, with ``--subprocesses``, to the
Celery pool processes it forks), samples its Python stacks 200 times a second
and writes collapsed stacks. It pauses the process for each sample: slower,
but ``--nonblocking`` gave torn stacks here (one function's frames under
another's). Samples of a thread waiting for work (an event loop's poll, a
pool process waiting for its next task) are left out; what remains is time
in Python frames, including time in C calls made from them (a SQLite
statement counts against the Python function that ran it) and waits for a
reply inside a task (a Redis round trip).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import BIN, Proc, Processes

if TYPE_CHECKING:
    from bench.sides import FlowbridgeSide

__all__ = ["Profile", "ProfileRun", "Profiler", "analyse", "compact", "pyspy_binary"]

#: Frames of flowbridge's own packages (py-spy names files relative to sys.path).
OWN_PACKAGES = ("state/", "tasks/", "bridge/", "flowbridge/")
#: Innermost frames that mean "waiting for the next thing to do" (an event loop's poll, a
#: pool process waiting for a task, an idle thread), which py-spy does not always flag as
#: idle. Waits for a reply inside a task (a Redis round trip, a SQLite lock) are kept.
IDLE_LEAVES = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "_epoll.poll (kombu/utils/eventio.py)",
        "Connection._recv (billiard/connection.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
    }
)
#: Frames that block on purpose until there is work: everything under them is idle too.
IDLE_CALLS = frozenset({"ListCommands.blpop (redis/commands/core.py)"})
_COUNT = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$", re.S)
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


#: Entry points whose breakdown the report shows, per process role.
ANCHORS = {
    "worker": ("execute_node (tasks/engine.py)",),
    "bridge": ("Bridge.handle (bridge/consumer.py)", "OutboxRelay._loop (bridge/outbox.py)"),
}


def pyspy_binary() -> str | None:
    """py-spy from the venv or PATH, or None."""
    candidate = BIN / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


class Profiler:
    """Attaches py-spy to processes as they start; ``stop`` makes each write its samples."""

    def __init__(self, processes: Processes, out_dir: Path, *, rate_hz: int = 200) -> None:
        binary = pyspy_binary()
        if binary is None:
            raise RuntimeError("py-spy not found: pip install -r bench/requirements.txt")
        self.binary = binary
        self.processes = processes
        self.out_dir = out_dir
        self.rate_hz = rate_hz
        self.recordings: dict[str, tuple[Proc, Path]] = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    def attach(self, target: Proc, role: str) -> None:
        """Record ``target`` and its children until ``stop``."""
        out = self.out_dir / f"{role}.txt"
        out.unlink(missing_ok=True)
        argv = [
            self.binary,
            "record",
            "--pid",
            str(target.pid),
            "--subprocesses",
            "--nolineno",
            "--rate",
            str(self.rate_hz),
            "--format",
            "raw",
            "--output",
            str(out),
        ]
        # A process that is still starting its interpreter cannot be attached to yet: retry.
        for _ in range(20):
            proc = self.processes.start(f"py-spy-{role}", argv, os.environ)
            time.sleep(0.5)
            if proc.alive():
                self.recordings[role] = (proc, out)
                return
        raise RuntimeError(f"py-spy could not attach to {target.name}:\n{proc.log_tail()}")

    def attach_side(self, side: FlowbridgeSide) -> None:
        """Record a running side's worker (with its pool processes) and bridge."""
        if side.worker is not None:
            self.attach(side.worker, "worker")
        if side.bridge is not None:
            self.attach(side.bridge, "bridge")

    def stop(self) -> dict[str, Path]:
        """Stop recording (SIGINT makes py-spy write its output); return the files written."""
        for proc, _ in self.recordings.values():
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGINT)
        done = {}
        for role, (proc, out) in self.recordings.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(60)
            self.processes.stop(proc, sig=None, timeout_s=1)
            if out.exists():
                done[role] = out
        return done


@dataclass
class Profile:
    """Where one process tree's CPU samples went."""

    role: str
    samples: int
    #: Samples left out because the innermost frame is an idle wait (``IDLE_LEAVES``).
    idle: int = 0
    #: Samples per process kind: the worker's main process vs its pool processes.
    by_process: dict[str, int] = field(default_factory=dict)
    #: Function → samples with that function anywhere on the stack (counted once per stack).
    inclusive: Counter[str] = field(default_factory=Counter)
    #: Function → samples where it was the innermost Python frame.
    own: Counter[str] = field(default_factory=Counter)
    #: Every (stack, samples), outermost frame first.
    stacks: list[tuple[tuple[str, ...], int]] = field(default_factory=list, repr=False)

    def tree(
        self, anchor: str, *, min_share: float = 0.04, max_depth: int = 5
    ) -> list[tuple[int, str, int, float]]:
        """Where ``anchor``'s samples go: ``(depth, function, samples, share of anchor)``.

        Children under ``min_share`` of the anchor are left out, as are levels past
        ``max_depth``; the anchor itself is the first row, at depth 0.
        """
        trie: dict[str, Any] = {}
        total = 0
        for funcs, count in self.stacks:
            if anchor not in funcs:
                continue
            total += count
            node = trie
            for fn in funcs[funcs.index(anchor) + 1 : funcs.index(anchor) + 1 + max_depth]:
                entry = node.setdefault(fn, [0, {}])
                entry[0] += count
                node = entry[1]
        if not total:
            return []
        rows = [(0, anchor, total, 1.0)]

        def walk(node: dict[str, Any], depth: int) -> None:
            for fn, (count, children) in sorted(node.items(), key=lambda kv: -kv[1][0]):
                if count / total >= min_share:
                    rows.append((depth, fn, count, count / total))
                    walk(children, depth + 1)

        walk(trie, 1)
        return rows

    def top(self, which: str, n: int, *, only_own_code: bool = False) -> list[dict[str, Any]]:
        counts = self.inclusive if which == "inclusive" else self.own
        rows = []
        for fn, count in counts.most_common():
            if only_own_code and not fn.split(" (", 1)[-1].startswith(OWN_PACKAGES):
                continue
            rows.append({"function": fn, "samples": count, "share": count / max(self.samples, 1)})
            if len(rows) == n:
                break
        return rows

    def to_json(self, n: int = 20) -> dict[str, Any]:
        trees = {a: self.tree(a) for a in ANCHORS.get(self.role, ())}
        return {
            "trees": {
                a: [{"depth": d, "function": f, "samples": c, "share": s} for d, f, c, s in rows]
                for a, rows in trees.items()
                if rows
            },
            "role": self.role,
            "samples": self.samples,
            "idle_samples_left_out": self.idle,
            "by_process": self.by_process,
            "top_inclusive_flowbridge": self.top("inclusive", n, only_own_code=True),
            "top_inclusive": self.top("inclusive", n),
            "top_own": self.top("own", n),
        }


def _function(frame: str) -> str:
    m = _FRAME.match(frame)
    if m is None:
        return frame
    return f"{m['fn']} ({m['file']})"


def _records(text: str) -> Iterator[tuple[str, int]]:
    """``(stack, count)`` per record; a process's command line may span lines."""
    pending = ""
    for line in text.split("\n"):
        pending = f"{pending}\n{line}" if pending else line
        m = _COUNT.match(pending)
        if m is not None:
            yield m["stack"], int(m["count"])
            pending = ""


def compact(src: Path, dst: Path) -> None:
    """Write ``src``'s stacks to ``dst`` with process frames reduced to ``process main`` and
    ``process pool`` (py-spy repeats each process's command line in every stack) and equal
    stacks merged: a tenth of the size, still the collapsed format flame graph tools read."""
    merged: Counter[str] = Counter()
    for stack, count in _records(src.read_text(errors="replace")):
        frames, depth = [], 0
        for frame in stack.split(";"):
            if frame.startswith("process "):
                frames.append("process main" if depth == 0 else "process pool")
                depth += 1
            else:
                frames.append(frame)
        merged[";".join(frames)] += count
    dst.write_text("".join(f"{stack} {count}\n" for stack, count in merged.most_common()))


def analyse(path: Path, role: str) -> Profile:
    """Aggregate py-spy's raw (collapsed) output by function, without line numbers."""
    profile = Profile(role=role, samples=0)
    for stack, count in _records(path.read_text(errors="replace")):
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        kind = "pool process" if len(procs) > 1 else "main process"
        funcs = [_function(f) for f in frames if not f.startswith("process ")]
        if not funcs:
            continue
        if funcs[-1] in IDLE_LEAVES or not IDLE_CALLS.isdisjoint(funcs):
            profile.idle += count
            continue
        profile.samples += count
        profile.stacks.append((tuple(funcs), count))
        profile.by_process[kind] = profile.by_process.get(kind, 0) + count
        profile.own[funcs[-1]] += count
        for fn in set(funcs):
            profile.inclusive[fn] += count
    return profile


@dataclass
class ProfileRun:
    """One profiled scenario: what ran, and a profile per process (bridge, worker)."""

    scenario: str
    what: str
    profiles: list[Profile]
