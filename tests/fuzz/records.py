"""A seeded generator of hostile Kafka records for the bridge's three topics.

Each record says whether the bridge may accept it (``may_accept``): a cancel,
pause, resume or retry of an unknown run is valid input (a cancel leaves a marker,
the others are recorded as not applied); everything else here is bad and must end
in the DLQ with a reason. Nothing generated names a real blueprint, workflow or
run, so no record starts work, except a rejected start that names its run, which
records that run as failed (what a waiting client needs).
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FuzzRecord", "generate"]

#: The bridge's size limit in the fuzz runs (the test sets FLOWBRIDGE_MAX_MESSAGE_BYTES).
MAX_BYTES = 200_000


@dataclass(frozen=True)
class FuzzRecord:
    """One record to produce: to ``jobs``, ``events`` or ``kw`` (kafka-workflow's topic)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    may_accept: bool = False
    kind: str = ""


#: The bridge's id rule (``bridge.messages``): such a string names a run, maybe an existing one.
_ID = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,200}$")

#: Values of the wrong type for any field.
WRONG: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**64, "", "x" * 300, [], [1, 2], {}, {"a": 1},
    "\u0000", "ü" * 3, "../../etc", " ", "run id with spaces", "\ud800", "a\udfffb",
]  # fmt: skip


def _rid(rng: random.Random) -> str:
    return "fuzz-" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=10))


def _templates(rng: random.Random) -> list[tuple[str, dict[str, Any], bool]]:
    """Valid-looking messages: (topic, value, accepted as they are)."""
    run = _rid(rng)
    return [
        ("jobs", {"v": 1, "type": "start", "run_id": run, "blueprint": "fuzz-nope", "input": {}}, False),
        ("jobs", {"v": 1, "type": "start", "blueprint": "fuzz-nope", "version": "1", "input": {"a": 1}}, False),
        ("jobs", {"v": 1, "type": "node", "run_id": run, "node": "a", "attempt": 1, "iteration": 0}, False),
        ("jobs", {"v": 1, "type": "cancel", "run_id": run, "reason": "fuzz"}, True),
        ("jobs", {"v": 1, "type": "retry", "run_id": run, "from": ["a"]}, True),
        ("jobs", {"v": 1, "type": "pause", "run_id": run}, True),
        ("jobs", {"v": 1, "type": "resume", "run_id": run}, True),
        ("jobs", {"runId": run, "blueprintId": "fuzz-nope", "nodeId": "a", "attempt": 1}, False),
        ("jobs", {"runId": run, "nodeId": "a"}, False),
        ("events", {"v": 1, "type": "event", "run_id": run, "name": "go", "event_id": "e1", "payload": {}}, False),
        ("events", {"v": 1, "type": "resume", "run_id": run, "node": "a", "output": 1, "action": "ok"}, False),
        ("events", {"ref": "r1", "value": 1}, False),
        ("kw", {"ref": "r1", "value": {"x": 1}}, False),
        ("kw", {"ref": "r1", "error": "boom"}, False),
    ]  # fmt: skip


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _deep(rng: random.Random) -> bytes:
    # Under a real broker's 1 MB record limit, over any recursion limit.
    depth = rng.choice([2_000, 20_000, 100_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    inner = opener * depth + "1" + closer * depth
    return (
        '{"v": 1, "type": "start", "blueprint": "fuzz-nope", "input": {"deep": ' + inner + "}}"
    ).encode()


def _one(rng: random.Random, n: int) -> FuzzRecord:
    kind = rng.choice(
        ["bytes", "truncated", "deep", "wrong-type", "huge", "version", "type", "key", "unknown",
         "kw", "headers"]
    )  # fmt: skip
    topic, msg, ok = rng.choice(_templates(rng))
    key = str(msg.get("run_id") or msg.get("runId") or _rid(rng)).encode()
    if topic == "kw":
        key = _rid(rng).encode()
    if kind == "bytes":
        raw = rng.randbytes(rng.randint(0, 300))
        return FuzzRecord(
            rng.choice(["jobs", "events", "kw"]), raw, key=rng.choice([None, key]), kind=kind
        )
    if kind == "truncated":
        full = _json(msg)
        return FuzzRecord(topic, full[: rng.randint(0, len(full) - 1)], key=key, kind=kind)
    if kind == "deep":
        return FuzzRecord("jobs", _deep(rng), key=key, kind=kind)
    if kind == "wrong-type":
        fields = [f for f in msg if f not in ("payload", "output", "value", "error")]
        name = rng.choice(fields)
        wrong = rng.choice([w for w in WRONG if type(w) is not type(msg[name]) or w != msg[name]])
        bad = {**msg, name: wrong}
        if name in ("reason", "version") and wrong is None:
            bad[name] = 17  # a missing optional field is fine: keep it wrong
        # A cancel, retry, pause or resume may still be valid with the new value ("" as a reason);
        # "../../etc" is a valid run id, and an earlier rejected start that named it made the run.
        reused = name in ("run_id", "runId") and isinstance(wrong, str) and bool(_ID.match(wrong))
        return FuzzRecord(
            topic, _json(bad), key=key, may_accept=ok or reused, kind=f"{kind}:{name}"
        )
    if kind == "huge":
        size = rng.choice([MAX_BYTES + 1, 2 * MAX_BYTES, 600_000])
        if rng.random() < 0.5:
            bad = (
                {**msg, "input": {"blob": "x" * size}}
                if "input" in msg
                else {**msg, "junk": "x" * size}
            )
        else:
            # Each item is 11 bytes with its separator: the array alone is over the limit.
            bad = {**msg, "junk": ["x" * 7] * (size // 11 + 1)}
        return FuzzRecord(topic, _json(bad), key=key, kind=kind)
    if kind == "version":
        if "v" not in msg:
            msg = {"v": 1, "type": "node", "run_id": _rid(rng), "node": "a"}
            topic = "jobs"
        v = rng.choice([0, 2, 99, -1, "1", "v1", 1.5, True, None, [1], {"v": 1}])
        bad = {**msg, "v": v}
        if v is None:
            del bad["v"]
        return FuzzRecord(topic, _json(bad), key=key, kind=kind)
    if kind == "type":
        if "v" not in msg:
            msg, topic = {"v": 1, "run_id": _rid(rng)}, "jobs"
        t = rng.choice(
            [
                "starts",
                "START",
                "",
                5,
                None,
                ["start"],
                "event" if topic == "jobs" else "start",
                "kill",
            ]
        )
        return FuzzRecord(topic, _json({**msg, "type": t}), key=key, kind=kind)
    if kind == "key":
        # A key that disagrees with the run id (or none, or not UTF-8).
        other = rng.choice([None, b"", b"\xff\xfe", _rid(rng).encode(), b"k" * 5000])
        accepted = ok and topic == "jobs"
        return FuzzRecord(topic, _json(msg), key=other, may_accept=accepted, kind=kind)
    if kind == "unknown":
        return FuzzRecord(topic, _json(msg), key=key, may_accept=ok, kind=kind)
    if kind == "kw":
        start = rng.choice(
            [b"new:", b"new:{", b"new:not json", b"new:" + _json({"a": 1}), b"new:" + _json([1]) ,
             b"new:" + _deep(rng), b"NEW:{}", b"new:" + b"\xff" * 10]
        )  # fmt: skip
        headers = rng.choice(
            [[], [("flowbridge-workflow", b"fuzz-nope")], [("flowbridge-workflow", b"\xff\xfe")],
             [("flowbridge-workflow", b"")]]
        )  # fmt: skip
        value = rng.choice(
            [start, _json({"ref": 5}), _json({"ref": ""}), _json({"ref": "r", "value": 1, "error": 2}),
             _json({"ref": "r", "extra": 1}), _json([1, 2]), _json("new:"), b"{\"ref\": \"r\"", start]
        )  # fmt: skip
        return FuzzRecord(
            rng.choice(["kw", "kw", "events"]),
            value,
            key=rng.choice([key, None, b"\xff", b"k" * 3000]),
            headers=headers,
            kind=kind,
        )
    # headers: a valid-looking record with hostile headers
    headers = [
        (rng.choice(["traceparent", "tracestate", "flowbridge-replay-of", "flowbridge-workflow", "x"]),
         rng.choice([b"", b"\xff\xfe", b"00-zz-zz-01", b"x" * 5000, b"jobs:0:1"]))
        for _ in range(rng.randint(1, 4))
    ]  # fmt: skip
    return FuzzRecord(topic, _json(msg), key=key, headers=headers, may_accept=ok, kind=kind)


def generate(count: int, *, seed: int) -> list[FuzzRecord]:
    """``count`` records from ``seed`` (the same list every time for one seed)."""
    rng = random.Random(seed)
    return [_one(rng, n) for n in range(count)]
