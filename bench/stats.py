"""How sure a ratio is: the median of per-pair ratios, a seeded bootstrap interval, a verdict.

The two sides of a scenario run alternately (A B A B ...), so repetition ``i`` of
flowbridge and of the baseline saw about the same machine: their ratio cancels
most of what a busy shared machine adds. The headline is the median of those
per-pair ratios; the 95 % interval comes from resampling the pairs with
replacement (a percentile bootstrap, seeded so a run's figures are reproducible).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["RatioStats", "Verdict", "bootstrap_interval", "pair_ratios", "ratio_stats", "verdict"]

#: Bootstrap resamples: enough that the 2.5/97.5 percentiles move by < 1 % between seeds.
RESAMPLES = 2000
SEED = 16
Kind = Literal["ratio_max", "ratio_min"]


def pair_ratios(flowbridge: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """flowbridge / baseline of each repetition, pair by pair (a zero baseline's pair dropped)."""
    return [fb / base for fb, base in zip(flowbridge, baseline, strict=False) if base]


def _quantile(ordered: Sequence[float], q: float) -> float:
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def bootstrap_interval(
    ratios: Sequence[float], *, level: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``ratios`` (the same for the same seed)."""
    if not ratios:
        raise ValueError("no ratios")
    rng = random.Random(seed)
    n = len(ratios)
    medians = sorted(statistics.median(rng.choices(ratios, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return _quantile(medians, tail), _quantile(medians, 1 - tail)


@dataclass(frozen=True)
class RatioStats:
    """The median per-pair ratio, its bootstrap interval and the number of pairs."""

    ratio: float
    lo: float
    hi: float
    pairs: int

    def text(self) -> str:
        return f"{self.ratio:.2f}x [{self.lo:.2f}-{self.hi:.2f}]"


def ratio_stats(
    flowbridge: Sequence[float], baseline: Sequence[float], *, seed: int = SEED
) -> RatioStats | None:
    """Median of the per-pair ratios with its 95 % interval (None without a pair)."""
    ratios = pair_ratios(flowbridge, baseline)
    if not ratios:
        return None
    lo, hi = bootstrap_interval(ratios, seed=seed)
    return RatioStats(statistics.median(ratios), lo, hi, len(ratios))


@dataclass(frozen=True)
class Verdict:
    """``met``, ``missed`` (by how much) or ``undecided`` (the interval straddles the target)."""

    state: Literal["met", "missed", "undecided"]
    text: str

    @property
    def decided(self) -> bool:
        return self.state != "undecided"


def verdict(stats: RatioStats, kind: Kind, target: float) -> Verdict:
    """Compare the whole interval with the target: only a clear interval decides."""
    if kind == "ratio_max":
        if stats.hi <= target:
            return Verdict("met", "met")
        if stats.lo > target:
            return Verdict("missed", f"missed by {(stats.ratio / target - 1) * 100:.0f} %")
    else:
        if stats.lo >= target:
            return Verdict("met", "met")
        if stats.hi < target:
            return Verdict("missed", f"missed by {(1 - stats.ratio / target) * 100:.0f} %")
    return Verdict("undecided", f"undecided (interval straddles {target:g}x)")
