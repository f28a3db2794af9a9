"""Sizes of a benchmark run, the targets of the issue, and one scenario's result."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from bench.stats import Kind, RatioStats, Verdict, ratio_stats, verdict

__all__ = ["FULL", "QUICK", "SMOKE", "ScenarioResult", "Sizes", "Target", "percentile", "summary"]


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
    #: Paired repetitions are added (up to this many) while a target's interval straddles it.
    max_reps: int = 15


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
    max_reps=8,
)
#: ``--smoke``: every scenario in seconds, only to show that each one still produces a ratio.
SMOKE = replace(
    QUICK,
    name="smoke",
    independent_runs=20,
    fanout_widths=(10, 20),
    ingest_messages=200,
    latency_runs=15,
    dbos_runs=2,
    fanout_timeout_s=30.0,
    max_reps=3,
)


@dataclass(frozen=True)
class Target:
    """One target of issue 16: flowbridge/baseline ≤ (``ratio_max``) or ≥ (``ratio_min``) value."""

    text: str
    kind: Kind
    value: float

    def verdict(self, result: ScenarioResult) -> Verdict | None:
        """met / missed by X / undecided, from the ratio's whole interval (None without pairs)."""
        got = result.stats
        return None if got is None else verdict(got, self.kind, self.value)

    def met(self, result: ScenarioResult) -> bool | None:
        """True when met, False when missed, None when undecided or unmeasured."""
        v = self.verdict(result)
        return None if v is None or not v.decided else v.state == "met"

    def miss(self, result: ScenarioResult) -> str:
        """The verdict in words ('' when there is no measurement)."""
        v = self.verdict(result)
        return "" if v is None else v.text


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
    def stats(self) -> RatioStats | None:
        """Median of the per-pair ratios and its seeded bootstrap 95 % interval."""
        return ratio_stats(self.flowbridge, self.baseline)

    @property
    def ratio(self) -> float | None:
        """The median of the per-pair ratios (flowbridge / baseline of the same repetition)."""
        got = self.stats
        return None if got is None else got.ratio

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else asdict(self.target)
        for side in ("flowbridge", "baseline"):
            data[f"{side}_stats"] = summary(getattr(self, side))
        data["ratio"] = self.ratio
        got = self.stats
        data["ratio_interval"] = None if got is None else [got.lo, got.hi]
        v = None if self.target is None else self.target.verdict(self)
        data["verdict"] = None if v is None else v.state
        data["target_met"] = None if self.target is None else self.target.met(self)
        data["target_miss"] = "" if self.target is None else self.target.miss(self)
        return data
