"""Helpers shared by the contract suite's modules: ids, runs, outbox rows, threads, processes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from state.constants import RUN_RUNNING
from state.protocol import StateStore
from state.records import OutboxMessage, Run

#: The ``spec`` fixture's type (conftest.StoreSpec): backend, URL and capabilities.
StoreSpec = Any

THREADS = 8
PROCESSES = 4


def new_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_run(run_id: str | None = None, *, status: str = RUN_RUNNING, **kw: Any) -> Run:
    return Run(
        run_id=run_id or new_id(),
        blueprint_id=kw.pop("blueprint_id", "bp"),
        version=kw.pop("version", "1"),
        status=status,
        input=kw.pop("input", {"n": 1}),
        snapshot=kw.pop("snapshot", {"id": "bp", "nodes": [{"id": "a"}, {"id": "b"}]}),
        **kw,
    )


def msg(topic: str = "t.runs", value: Any = None) -> OutboxMessage:
    return OutboxMessage(id=new_id("msg"), topic=topic, key="k", value=value or {"x": 1})


def started(store: StateStore, *nodes: str, status: str = RUN_RUNNING) -> str:
    run_id = new_id()
    created, _ = store.create_run(make_run(run_id, status=status), start_nodes=nodes)
    assert created
    return run_id


def kinds(store: StateStore, run_id: str) -> list[str]:
    return [e.kind for e in store.get_history(run_id)]


def in_parallel(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` in ``n`` threads released together; their results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def open_in_process(url: str) -> StateStore:
    """A store in a spawned process, opened by its URL as a worker opens it."""
    import os

    from state import open_store

    return open_store(url, env=os.environ)
