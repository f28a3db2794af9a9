"""The benchmark's machinery: errors, waiting and alternating, child processes, shared services.

Every process the benchmark starts goes through ``Processes``, which stops it
(SIGTERM, then SIGKILL to its process group) when its scope ends, on an
exception and on Ctrl-C alike. Children run in their own session, so Ctrl-C
in the terminal reaches only the benchmark, which then stops them in order;
on Linux they are also started through ``setpriv --pdeathsig TERM``, so they
get SIGTERM if the benchmark itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.stats import ratio_stats, verdict

if TYPE_CHECKING:
    from bench.model import Target
    from flowbridge.dev import Service

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 60.0
#: flowbridge's default shard count (tasks/settings.py), set explicitly to know the queue names.
SHARDS = 8
#: Partitions of every jobs topic (the bridge's and the raw consumer's).
PARTITIONS = 2
#: tansu holds a new group's first join for ~session/2: 2 s gives a 1 s join (docs/dev-services.md).
SESSION_TIMEOUT_MS = 2000


class BenchError(Exception):
    """A scenario could not be measured; the message says what happened and where the logs are."""


class BenchTimeout(BenchError):
    """Something the benchmark waited for did not happen in time."""


class ScenarioSkipped(BenchError):
    """A scenario cannot run here (missing dependency, feature not available yet)."""


# --- timing and statistics ---------------------------------------------------


def wait_until(
    predicate: Callable[[], object], *, timeout_s: float, interval_s: float, what: str
) -> float:
    """Poll ``predicate`` every ``interval_s``; return ``perf_counter()`` when it first holds."""
    deadline = time.perf_counter() + timeout_s
    while True:
        if predicate():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise BenchTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def alternate(
    reps: int,
    sides: Mapping[str, Callable[[int], float]],
    log: Callable[[str], None],
    *,
    switch: Callable[[str], None] | None = None,
    warmup: int = 0,
    target: Target | None = None,
    max_reps: int | None = None,
) -> dict[str, list[float]]:
    """Run each side once per repetition, in order (A B A B ...); return each side's values.

    ``switch(name)`` is called before each of ``name``'s runs, untimed: it
    pauses the other side's idle pollers (see ``Side.pause``). ``warmup`` runs
    of each side (with ``rep=-1``) come first and are not kept. With a
    ``target``, paired repetitions are added (up to ``max_reps``) while the
    interval of the ratio of the first side to the last straddles it.
    """
    for _ in range(warmup):
        for name, fn in sides.items():
            if switch is not None:
                switch(name)
            fn(-1)
    values: dict[str, list[float]] = {name: [] for name in sides}
    first, last = next(iter(sides)), list(sides)[-1]
    rep = 0
    while True:
        for name, fn in sides.items():
            if switch is not None:
                switch(name)
            v = fn(rep)
            values[name].append(v)
            log(f"    rep {rep + 1} {name:<10} {v:,.3f}")
        rep += 1
        if rep < reps:
            continue
        if target is None or rep >= max(reps, max_reps or reps):
            break
        got = ratio_stats(values[first], values[last])
        if got is None:
            break
        v = verdict(got, target.kind, target.value)
        if v.decided:
            break
        log(f"    {got.text()}: {v.text}; one more pair")
    return values


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_shares(pids: Mapping[str, int], seconds: float) -> dict[str, float | None]:
    """Share of one core each process uses over ``seconds`` (call it while they are idle)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    shares: dict[str, float | None] = {}
    for name, pid in pids.items():
        b, a = before[name], cpu_seconds(pid)
        shares[name] = None if a is None or b is None else (a - b) / seconds
    return shares


# --- processes -----------------------------------------------------------------


@dataclass
class Proc:
    """One child process and its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    #: A file the process writes when it is ready (see ``wait_ready``).
    ready_file: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pause(self) -> None:
        """SIGSTOP: an idle Kafka consumer polls ~100 times a second; keep it off the CPU."""
        if self.alive():
            self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Starts child processes and guarantees they are stopped."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[Proc] = []
        self._pdeathsig = shutil.which("setpriv") if sys.platform.startswith("linux") else None

    def start(
        self, name: str, argv: list[str], env: Mapping[str, str], *, ready_file: Path | None = None
    ) -> Proc:
        """Start ``argv`` with ``env``, output appended to ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        prefix = [self._pdeathsig, "--pdeathsig", "TERM", "--"] if self._pdeathsig else []
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                prefix + argv,
                env=dict(env),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path, ready_file)
        self._procs.append(proc)
        return proc

    def stop(
        self, proc: Proc, *, sig: int | None = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S
    ) -> None:
        """Stop one process: ``sig``, then SIGKILL to its process group (its pool children too)."""
        if proc.alive() and sig is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGCONT)  # a paused process would not see sig
                proc.popen.send_signal(sig)
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print(f"  {proc.name} (pid {proc.pid}) did not stop in {timeout_s:g} s: killed")
        # start_new_session made the process a group leader: its group is ours alone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(5)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_many(self, procs: Sequence[Proc]) -> None:
        """Signal all of ``procs`` at once, then wait for each (workers take a second each)."""
        for proc in procs:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGCONT)
                    proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            self.stop(proc, sig=None)

    @contextlib.contextmanager
    def scope(self) -> Iterator[Processes]:
        """Stop every process started inside the block when it ends."""
        mark = len(self._procs)
        try:
            yield self
        finally:
            self.stop_many(list(reversed(self._procs[mark:])))

    def stop_all(self) -> None:
        self.stop_many(list(reversed(self._procs)))


def wait_ready(proc: Proc, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until ``proc`` wrote its ready file; fail with its log if it exits first."""
    assert proc.ready_file is not None, f"{proc.name} has no ready file"
    deadline = time.monotonic() + timeout_s
    while not proc.ready_file.exists():
        if not proc.alive():
            raise BenchError(f"{proc.name} exited on start; {proc.log_path}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchTimeout(f"{proc.name} not ready after {timeout_s:g} s:\n{proc.log_tail()}")
        time.sleep(0.05)


def celery_worker_argv(app: str, hostname: str, concurrency: int) -> list[str]:
    """The same worker command line for both sides: prefork, no gossip/mingle/heartbeat."""
    return [
        str(BIN / "celery"),
        "-A",
        app,
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{hostname}@%h",
    ]


# --- what a scenario shares ---------------------------------------------------


@dataclass
class Env:
    """What a scenario's processes share: services, where logs go, the process registry."""

    kafka: Service
    redis: Service
    workdir: Path
    processes: Processes
    concurrency: int
    _next_db: list[int] = field(default_factory=lambda: [1])

    def redis_url(self) -> str:
        """A Redis database of its own (flushed) for one side of one scenario."""
        import redis as redis_lib

        db = self._next_db[0]
        self._next_db[0] += 1
        url = f"redis://127.0.0.1:{self.redis.port}/{db}"
        client = redis_lib.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
        return url

    def base_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLOWBRIDGE_", "KAFKA_", "SCYLLA_", "BENCH_"))
        }
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka.url,
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        return env
