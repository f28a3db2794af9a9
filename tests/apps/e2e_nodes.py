"""Nodes and blueprints the end-to-end tests run in real Celery workers (FLOWBRIDGE_APP).

Side effects are counted in Redis under ``{FLOWBRIDGE_REDIS_PREFIX}effects:<name>``
so tests can assert how many times node code really ran.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from functools import cache
from typing import Any

import redis

from flowbridge import NodeContext, NodeError, Result, node, register_blueprint


@cache
def _redis() -> redis.Redis:
    # E2E_REDIS_URL: a plain URL of the same Redis when REDIS_URL is TLS with a self-signed cert.
    return redis.Redis.from_url(os.environ.get("E2E_REDIS_URL") or os.environ["REDIS_URL"])


def effect(name: str) -> int:
    """Count one side effect of ``name``; returns the new count."""
    return int(_redis().incr(os.environ.get("FLOWBRIDGE_REDIS_PREFIX", "") + f"effects:{name}"))


@node("echo")
def echo(ctx: NodeContext) -> dict[str, Any]:
    effect(ctx.node_id)
    return {"node": ctx.node_id, "params": dict(ctx.params), "attempt": ctx.attempt}


@node("choose")
def choose(ctx: NodeContext) -> Result:
    effect(ctx.node_id)
    return Result(output={"route": ctx.input["route"]}, action=ctx.input["route"])


@node("score")
def score(ctx: NodeContext) -> dict[str, Any]:
    effect(ctx.node_id)
    ctx.context.set("tier", "gold" if ctx.input["score"] >= 50 else "basic")
    return {"score": ctx.input["score"]}


@node("flaky")
def flaky(ctx: NodeContext) -> dict[str, Any]:
    effect(f"{ctx.node_id}.attempts")
    if ctx.attempt <= int(ctx.params["failures"]):
        raise RuntimeError(f"transient failure on attempt {ctx.attempt}")
    effect(ctx.node_id)
    return {"succeeded_on": ctx.attempt}


@node("decline")
def decline(ctx: NodeContext) -> None:
    effect(f"{ctx.node_id}.attempts")
    raise NodeError("card declined", retryable=False)


@node("slow")
def slow(ctx: NodeContext) -> dict[str, Any]:
    effect(f"{ctx.node_id}.started")
    # Fault-injection tests kill the pool process that runs this node.
    _redis().set(os.environ.get("FLOWBRIDGE_REDIS_PREFIX", "") + f"pid:{ctx.node_id}", os.getpid())
    time.sleep(float(ctx.params["seconds"]))
    effect(ctx.node_id)
    return {"slept": ctx.params["seconds"]}


@node("crash")
def crash(ctx: NodeContext) -> None:
    effect(f"{ctx.node_id}.started")
    os.kill(os.getpid(), signal.SIGKILL)


@node("emit")
async def emit(ctx: NodeContext) -> dict[str, Any]:
    effect(ctx.node_id)
    ctx.emit(str(ctx.params["topic"]), {"run_id": ctx.run_id, "hello": "world"})
    return {"emitted": True}


def _chain(bid: str, ids: list[str], uses: str = "echo", **cfg: Any) -> None:
    register_blueprint(
        {
            "id": bid,
            "nodes": [{"id": i, "uses": uses, "config": cfg} for i in ids],
            "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
        }
    )


_chain("linear", ["a", "b", "c"])
_chain("linear20", [f"n{i:02d}" for i in range(20)])
register_blueprint(
    {
        "id": "branch",
        "nodes": [
            {"id": "choose", "uses": "choose"},
            {"id": "yes", "uses": "echo"},
            {"id": "no", "uses": "echo"},
            {"id": "no-after", "uses": "echo"},
            {"id": "always", "uses": "echo"},
        ],
        "edges": [
            {"source": "choose", "target": "yes", "action": "yes"},
            {"source": "choose", "target": "no", "action": "no"},
            {"source": "no", "target": "no-after"},
        ],
    }
)
register_blueprint(
    {
        "id": "conditional",
        "nodes": [
            {"id": "score", "uses": "score"},
            {"id": "gold", "uses": "echo"},
            {"id": "basic", "uses": "echo"},
        ],
        "edges": [
            {
                "source": "score",
                "target": "gold",
                "condition": "context.tier == 'gold' && output.score >= 50",
            },
            {"source": "score", "target": "basic", "condition": "context.tier != 'gold'"},
        ],
    }
)
register_blueprint(
    {
        "id": "retry",
        "nodes": [
            {
                "id": "flaky",
                "uses": "flaky",
                "params": {"failures": 2},
                "config": {"maxRetries": 3, "retryDelay": 50},
            },
            {"id": "after", "uses": "echo"},
        ],
        "edges": [{"source": "flaky", "target": "after"}],
    }
)
register_blueprint(
    {
        "id": "exhaust",
        "nodes": [
            {
                "id": "flaky",
                "uses": "flaky",
                "params": {"failures": 5},
                "config": {"maxRetries": 2, "retryDelay": 20},
            },
            {"id": "after", "uses": "echo"},
        ],
        "edges": [{"source": "flaky", "target": "after"}],
    }
)
register_blueprint(
    {
        "id": "declined",
        "nodes": [
            {"id": "charge", "uses": "decline", "config": {"maxRetries": 3}},
            {"id": "after", "uses": "echo"},
        ],
        "edges": [{"source": "charge", "target": "after"}],
    }
)
register_blueprint(
    {
        "id": "timeout",
        "nodes": [
            {"id": "slow", "uses": "slow", "params": {"seconds": 6}, "config": {"timeout": 1000}},
            {"id": "after", "uses": "echo"},
        ],
        "edges": [{"source": "slow", "target": "after"}],
    }
)
register_blueprint(
    {
        "id": "fallback",
        "nodes": [
            {"id": "charge", "uses": "decline", "config": {"fallback": "manual"}},
            {"id": "manual", "uses": "echo"},
            {"id": "ship", "uses": "echo"},
        ],
        "edges": [{"source": "charge", "target": "ship"}],
    }
)
register_blueprint(
    {
        "id": "gated",
        "nodes": [
            {"id": "first", "uses": "echo"},
            {"id": "gate", "uses": "slow", "params": {"seconds": 2}},
            {"id": "last", "uses": "echo"},
        ],
        "edges": [{"source": "first", "target": "gate"}, {"source": "gate", "target": "last"}],
    }
)
register_blueprint(
    {
        "id": "emitter",
        "nodes": [{"id": "emit", "uses": "emit", "params": {"topic": "user.events"}}],
        "edges": [],
    }
)
register_blueprint(
    {
        "id": "crasher",
        "nodes": [{"id": "crash", "uses": "crash"}, {"id": "after", "uses": "echo"}],
        "edges": [{"source": "crash", "target": "after"}],
    }
)


@node("collect")
def collect(ctx: NodeContext) -> dict[str, Any]:
    effect(ctx.node_id)
    return {"branches": dict(ctx.branches)}


def _fan(bid: str, branches: dict[str, list[tuple[Any, ...]]], **join_cfg: Any) -> None:
    """start -> each branch (a chain of (id, uses, params[, config])) -> join -> end."""
    nodes: list[dict[str, Any]] = [{"id": "start", "uses": "echo"}]
    edges: list[dict[str, Any]] = []
    for chain in branches.values():
        prev = "start"
        for node_id, uses, params, *config in chain:
            nodes.append(
                {
                    "id": node_id,
                    "uses": uses,
                    "params": params,
                    "config": config[0] if config else {},
                }
            )
            edges.append({"source": prev, "target": node_id})
            prev = node_id
        edges.append({"source": prev, "target": "join"})
    nodes.append({"id": "join", "uses": "collect", "config": join_cfg})
    nodes.append({"id": "end", "uses": "echo"})
    edges.append({"source": "join", "target": "end"})
    register_blueprint({"id": bid, "nodes": nodes, "edges": edges})


_fan("diamond", {"l": [("left", "echo", {})], "r": [("right", "echo", {})]})
_fan(
    "diamond-chains",
    {
        "l": [("l1", "echo", {}), ("l2", "echo", {}), ("l3", "echo", {})],
        "r": [
            ("r1", "echo", {}),
            ("r2", "flaky", {"failures": 1}, {"maxRetries": 2, "retryDelay": 50}),
        ],
    },
)
_fan("wide", {f"w{i}": [(f"w{i:04d}", "echo", {})] for i in range(1000)})
_fan(
    "slow-diamond",
    {"a": [("s1", "slow", {"seconds": 1.5})], "b": [("s2", "slow", {"seconds": 1.5})]},
)
_fan(
    "race",
    {
        "fast": [("fast", "echo", {})],
        "slow": [("slow1", "slow", {"seconds": 1.5}), ("slow2", "echo", {})],
    },
    joinStrategy="race",
)
_fan(
    "race-running",
    {
        "fast": [("fast", "slow", {"seconds": 1})],
        "slow": [("slow1", "slow", {"seconds": 2.5}), ("slow2", "echo", {})],
    },
    joinStrategy="race",
)
_fan(
    "settled",
    {"ok": [("ok", "echo", {})], "bad": [("bad", "decline", {})]},
    joinStrategy="all-settled",
)
_fan("failfast", {"ok": [("ok", "echo", {})], "bad": [("bad", "decline", {})]})
_fan(
    "quorum",
    {
        "q1": [("q1", "echo", {})],
        "q2": [("q2", "echo", {})],
        "q3": [("q3", "slow", {"seconds": 1.5}), ("q3b", "echo", {})],
    },
    joinStrategy="quorum",
    n=2,
)
register_blueprint(
    {
        "id": "nested",
        "nodes": [
            {"id": "start", "uses": "echo"},
            {"id": "a1", "uses": "echo"},
            {"id": "a2x", "uses": "echo"},
            {"id": "a2y", "uses": "echo"},
            {"id": "a3", "uses": "collect"},
            {"id": "b1", "uses": "echo"},
            {"id": "join", "uses": "collect"},
        ],
        "edges": [
            {"source": "start", "target": "a1"},
            {"source": "start", "target": "b1"},
            {"source": "a1", "target": "a2x"},
            {"source": "a1", "target": "a2y"},
            {"source": "a2x", "target": "a3"},
            {"source": "a2y", "target": "a3"},
            {"source": "a3", "target": "join"},
            {"source": "b1", "target": "join"},
        ],
    }
)
register_blueprint(
    {
        "id": "split-join",
        "nodes": [
            {"id": "choose", "uses": "choose"},
            {"id": "yes", "uses": "echo"},
            {"id": "no", "uses": "echo"},
            {"id": "no2", "uses": "echo"},
            {"id": "join", "uses": "collect"},
        ],
        "edges": [
            {"source": "choose", "target": "yes", "action": "yes"},
            {"source": "choose", "target": "no", "action": "no"},
            {"source": "no", "target": "no2"},
            {"source": "yes", "target": "join"},
            {"source": "no2", "target": "join"},
        ],
    }
)
_fan("slow-fan", {f"s{i}": [(f"sf{i}", "slow", {"seconds": 1})] for i in range(6)})


#: Add the key to the sink's set and, only if it was new, count the effect.
_APPLY_ONCE = (
    "if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then return redis.call('INCR', KEYS[2]) end "
    "return 0"
)


@node("sink")
def sink(ctx: NodeContext) -> dict[str, Any]:
    """An idempotent external effect: applied once per idempotency key, however often code runs."""
    prefix = os.environ.get("FLOWBRIDGE_REDIS_PREFIX", "")
    effect(f"{ctx.node_id}.calls")
    time.sleep(float(ctx.params.get("seconds", 0)))  # keep tasks in flight for kill loops
    # The effect and its count in one step, as a system that dedupes would apply it: a process
    # killed between two separate calls would leave the key without its count.
    _redis().eval(
        _APPLY_ONCE, 2, prefix + "sink", prefix + f"effects:{ctx.node_id}", ctx.idempotency_key
    )
    return {"key": ctx.idempotency_key}


def _seq(
    bid: str, nodes: list[dict[str, Any]], extra_edges: list[dict[str, Any]] | None = None
) -> None:
    """A chain of the given nodes, in order (plus any extra edges)."""
    edges = [{"source": a["id"], "target": b["id"]} for a, b in itertools.pairwise(nodes)]
    register_blueprint({"id": bid, "nodes": nodes, "edges": edges + (extra_edges or [])})


_seq(
    "nap",
    [{"id": "nap", "uses": "sleep", "params": {"duration": "2s"}}, {"id": "after", "uses": "echo"}],
)
_seq(
    "long-nap",
    [{"id": "nap", "uses": "sleep", "params": {"duration": "1d"}}, {"id": "after", "uses": "echo"}],
)
_seq(
    "approval",
    [
        {"id": "approve", "uses": "wait", "params": {"event": "approved"}},
        {"id": "after", "uses": "echo"},
    ],
)
_seq(
    "late-wait",
    [
        {"id": "work", "uses": "slow", "params": {"seconds": 1.5}},
        {"id": "approve", "uses": "wait", "params": {"event": "go"}},
        {"id": "after", "uses": "echo"},
    ],
)
_seq(
    "two-waits",
    [
        {"id": "w1", "uses": "wait", "params": {"event": "go"}},
        {"id": "w2", "uses": "wait", "params": {"event": "go"}},
        {"id": "after", "uses": "echo"},
    ],
)
register_blueprint(
    {
        "id": "wait-timeout",
        "nodes": [
            {
                "id": "approve",
                "uses": "wait",
                "params": {"event": "x", "timeout": "1s", "timeoutAction": "expired"},
            },
            {"id": "on-timeout", "uses": "echo"},
            {"id": "on-event", "uses": "echo"},
        ],
        "edges": [
            {"source": "approve", "target": "on-timeout", "action": "expired"},
            {"source": "approve", "target": "on-event"},
        ],
    }
)
_seq(
    "sinks",
    [
        {"id": "s1", "uses": "sink"},
        {"id": "s2", "uses": "slow", "params": {"seconds": 2}},
        {"id": "s3", "uses": "sink"},
        {"id": "s4", "uses": "sink"},
    ],
)


@node("fixable")
def fixable(ctx: NodeContext) -> dict[str, Any]:
    """Fails for good while ``broken:<node>`` is set in Redis: "fixing" it is deleting the key."""
    effect(f"{ctx.node_id}.attempts")
    if _redis().exists(os.environ.get("FLOWBRIDGE_REDIS_PREFIX", "") + f"broken:{ctx.node_id}"):
        raise NodeError(f"{ctx.node_id} is broken", retryable=False)
    effect(ctx.node_id)
    return {"fixed": ctx.node_id, "attempt": ctx.attempt}


# a -> fix -> c, and a -> side (a branch the retry from fix keeps).
register_blueprint(
    {
        "id": "fixme",
        "nodes": [
            {"id": "a", "uses": "echo"},
            {"id": "fix", "uses": "fixable"},
            {"id": "c", "uses": "echo"},
            {"id": "side", "uses": "echo"},
        ],
        "edges": [
            {"source": "a", "target": "fix"},
            {"source": "fix", "target": "c"},
            {"source": "a", "target": "side"},
        ],
    }
)
# Short nodes for the kill loop: each an idempotent effect, so a rerun is visible but harmless.
_seq(
    "sink-chain",
    [{"id": f"k{i}", "uses": "sink", "params": {"seconds": 0.05}} for i in range(1, 5)],
)


@node("long-sink")
def long_sink(ctx: NodeContext) -> dict[str, Any]:
    """A node that runs longer than FLOWBRIDGE_STALLED_AFTER_S, then applies its effect once."""
    _redis().set(os.environ.get("FLOWBRIDGE_REDIS_PREFIX", "") + f"pid:{ctx.node_id}", os.getpid())
    return sink(ctx)


# A long node between two short ones (node leases: it must run once, however long it takes).
_seq(
    "leased",
    [
        {"id": "first", "uses": "echo"},
        {"id": "long", "uses": "long-sink", "params": {"seconds": 6}},
        {"id": "last", "uses": "echo"},
    ],
)
# flowcraft built-ins (subflow, batch, loop): their own module, registered with these.
from tests.apps import builtin_nodes  # noqa: E402, F401
