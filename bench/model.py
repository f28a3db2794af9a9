"""Sizes of a benchmark run, the targets of the issue, and one scenario's result."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["FULL", "QUICK", "ScenarioResult", "Sizes", "Target", "percentile", "summary"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """Median, min and max of one side's repetitions (None when there are none)."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does; ``--quick`` shrinks everything but the repetitions."""

    name: str
    #: Repetitions of each side, alternated A B A B (the issue asks for at least 3).
    reps: int
    #: Scenario 1: chains run (and averaged) per repetition.
    chains_per_rep: int
    #: Scenario 2: independent one-node runs (and raw tasks) per repetition.
    independent_runs: int
    #: Scenario 3: fan-out widths (each must be one of ``bench.joins.FANOUT_WIDTHS``).
    fanout_widths: tuple[int, ...]
    #: Scenario 4: ``node`` jobs in Kafka per repetition.
    ingest_messages: int
    #: Scenario 5: start → first node samples per side, over all repetitions.
    latency_runs: int
    #: Scenario 6: workflows per repetition and side.
    dbos_runs: int
    #: Longest a single fan-out run may take before the scenario gives up on it.
    fanout_timeout_s: float


FULL = Sizes(
    name="full",
    reps=5,
    chains_per_rep=3,
    independent_runs=1000,
    fanout_widths=(10, 1000),
    ingest_messages=20_000,
    latency_runs=500,
    dbos_runs=30,
    fanout_timeout_s=300.0,
)
QUICK = Sizes(
    name="quick",
    reps=3,
    chains_per_rep=1,
    independent_runs=200,
    fanout_widths=(10, 200),
    ingest_messages=3_000,
    latency_runs=120,
    dbos_runs=10,
    fanout_timeout_s=60.0,
)


@dataclass(frozen=True)
class Target:
    """One target of the issue, checked against a result."""

    text: str
    #: ``ratio_max``: flowbridge/baseline ≤ value; ``ratio_min``: ≥ value;
    #: ``value_max``: flowbridge's headline value ≤ value.
    kind: Literal["ratio_max", "ratio_min", "value_max"]
    value: float

    def met(self, result: ScenarioResult) -> bool | None:
        measured = result.fb_headline if self.kind == "value_max" else result.ratio
        if measured is None:
            return None
        return measured >= self.value if self.kind == "ratio_min" else measured <= self.value

    def miss(self, result: ScenarioResult) -> str:
        """By how much the target is missed, in words ('' when met or unknown)."""
        if self.met(result) is not False:
            return ""
        if self.kind == "value_max":
            v = result.fb_headline or 0.0
            return f"{v:.1f} {result.unit} is {v / self.value:.1f}x the {self.value:g} target"
        ratio = result.ratio or 0.0
        if self.kind == "ratio_min":
            return (
                f"{ratio:.2f}x is {(1 - ratio / self.value) * 100:.0f} % short of {self.value:g}x"
            )
        return f"{ratio:.2f}x is {(ratio / self.value - 1) * 100:.0f} % over {self.value:g}x"


@dataclass
class ScenarioResult:
    """What one scenario (or one width of one) measured, per repetition and side."""

    id: str
    title: str
    metric: str
    unit: str
    better: Literal["lower", "higher"]
    baseline_name: str
    target: Target | None
    flowbridge: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: Literal["ok", "skipped", "failed"] = "ok"
    reason: str | None = None

    @property
    def fb_median(self) -> float | None:
        return statistics.median(self.flowbridge) if self.flowbridge else None

    @property
    def base_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def fb_headline(self) -> float | None:
        """The value a ``value_max`` target is checked against (pooled p50 where there is one)."""
        pooled = self.extra.get("pooled", {}).get("flowbridge", {})
        return float(pooled["p50"]) if "p50" in pooled else self.fb_median

    @property
    def ratio(self) -> float | None:
        fb, base = self.fb_median, self.base_median
        if fb is None or not base:
            return None
        return fb / base

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else asdict(self.target)
        for side in ("flowbridge", "baseline"):
            data[f"{side}_stats"] = summary(getattr(self, side))
        data["ratio"] = self.ratio
        data["target_met"] = None if self.target is None else self.target.met(self)
        data["target_miss"] = "" if self.target is None else self.target.miss(self)
        return data
