"""Node leases from the worker: while an attempt runs, a daemon thread renews its lease.

A worker claims a node attempt with a lease (``begin_attempt(claimed_by=...,
lease_until=now + lease_s)``, in the claim's own write) and, while the node's
code runs, renews it every ``lease_s / 3`` (``StateStore.renew_lease``). The
reconciler re-emits a running node only once its lease expired
(``state.rules.leases``), so a node may run for hours without a second
concurrent copy; a worker that was kill -9'd stops renewing, and its node is
taken over ``lease_s`` later.

One thread per worker process renews every attempt it holds (a process runs
one at a time under prefork, several under threads); it starts with the
first lease and lives as long as the process. A renewal that finds the lease
lost (the attempt was taken over after a pause longer than the lease, or it
ended) is logged: the attempt's result is fenced by the store's conditional
completion, so this worker's commit of a taken-over attempt may still apply
once, but never twice.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from state.protocol import StateStore
from state.records import NodeState

if TYPE_CHECKING:
    from tasks.runtime import Runtime

__all__ = ["Lease", "Renewer", "begin_leased", "held", "identity", "renewer"]

log = logging.getLogger("flowbridge.leases")


def identity(hostname: str | None, task_id: str | None) -> str:
    """Who claims an attempt: ``<worker hostname>:<pid>:<celery task id>``."""
    return f"{hostname or 'worker'}:{os.getpid()}:{task_id or '-'}"


@dataclass(frozen=True, kw_only=True)
class Lease:
    """The lease of one claimed attempt."""

    run_id: str
    node_id: str
    iteration: int
    attempt: int
    claimed_by: str


class Renewer:
    """Renews the leases this process holds, every ``lease_s / 3``, from one daemon thread."""

    def __init__(self, *, store: StateStore, clock: Callable[[], float], lease_s: float) -> None:
        """Renew on ``store`` to ``clock() + lease_s``."""
        self.store = store
        self.clock = clock
        self.lease_s = lease_s
        self._every_s = lease_s / 3
        self._cond = threading.Condition()
        #: Each held lease and when its next renewal is due (``clock`` time).
        self._held: dict[Lease, float] = {}
        self._thread: threading.Thread | None = None

    def until(self) -> float:
        """The expiry of a lease taken or renewed now."""
        return self.clock() + self.lease_s

    @contextmanager
    def hold(self, lease: Lease) -> Iterator[None]:
        """Renew ``lease`` while the block runs (it was taken by the claim)."""
        with self._cond:
            self._held[lease] = self.clock() + self._every_s
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="flowbridge-leases", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._held.pop(lease, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = self.clock()
                due = [lease for lease, at in self._held.items() if at <= now]
                if not due:
                    nearest = min(self._held.values(), default=now + self._every_s)
                    self._cond.wait(timeout=max(nearest - now, 0.01))
                    continue
                for lease in due:
                    self._held[lease] = now + self._every_s
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        try:
            renewed = self.store.renew_lease(
                lease.run_id,
                lease.node_id,
                lease.iteration,
                attempt=lease.attempt,
                claimed_by=lease.claimed_by,
                until=self.until(),
            )
        except Exception as exc:  # the store may be away for a moment: the next renewal tries
            log.warning(
                "run %s: renewing the lease of node %s failed: %s", lease.run_id, lease.node_id, exc
            )
            return
        if renewed:
            return
        with self._cond:
            if self._held.pop(lease, None) is None:
                return  # the attempt ended meanwhile: its commit moved the node on
        log.warning(
            "run %s: node %s attempt %d lost its lease (%s no longer holds it: taken over or "
            "finished elsewhere); its result is committed at most once",
            lease.run_id,
            lease.node_id,
            lease.attempt,
            lease.claimed_by,
        )


#: This process's renewers, by store (a forked child makes its own: threads do not fork).
_RENEWERS: dict[tuple[int, int, float], Renewer] = {}
_LOCK = threading.Lock()


def renewer(store: StateStore, clock: Callable[[], float], lease_s: float) -> Renewer | None:
    """The renewer of ``store`` in this process; None when leases are off (``lease_s`` 0)."""
    if lease_s <= 0:
        return None
    key = (os.getpid(), id(store), lease_s)
    with _LOCK:
        found = _RENEWERS.get(key)
        if found is None or found.store is not store:
            found = _RENEWERS[key] = Renewer(store=store, clock=clock, lease_s=lease_s)
        return found


def begin_leased(
    rt: Runtime,
    claim: str | None,
    key: tuple[str, str, int],
    attempt: int,
    *,
    takeover: bool,
    create: bool = False,
    start_run: bool = False,
) -> tuple[NodeState | None, Renewer | None]:
    """``begin_attempt`` by ``claim``, with a lease in the claim's write when leases are on.

    Returns the claimed record (None: not claimable) and the renewer that keeps its lease.
    """
    keeper = renewer(rt.store, rt.clock, rt.settings.lease_s) if claim else None
    began = rt.store.begin_attempt(
        *key,
        attempt,
        takeover=takeover,
        create=create,
        claimed_by=claim if keeper is not None else None,
        lease_until=keeper.until() if keeper is not None else None,
        start_run=start_run,
    )
    return began, keeper


@contextmanager
def held(keeper: Renewer | None, node: NodeState) -> Iterator[None]:
    """Renew the lease the claim of ``node`` took while the block runs (none: nothing to do)."""
    if keeper is None or node.claimed_by is None:
        yield
        return
    lease = Lease(
        run_id=node.run_id,
        node_id=node.node_id,
        iteration=node.iteration,
        attempt=node.attempts,
        claimed_by=node.claimed_by,
    )
    with keeper.hold(lease):
        yield
