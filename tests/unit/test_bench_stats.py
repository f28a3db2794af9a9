"""bench/stats.py: the per-pair ratio, its seeded bootstrap interval and the verdict."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import pytest

from bench.harness import alternate
from bench.model import Target
from bench.stats import RatioStats, bootstrap_interval, pair_ratios, ratio_stats, verdict

# Seeded generated cases, not hypothesis: its check of the global ``random`` state fails these
# tests when a thread left by an earlier test in the same process draws from it meanwhile.
CASES = range(60)


def _positive(rng: random.Random) -> float:
    return 10 ** rng.uniform(-2, 6)


def _pairs(rng: random.Random) -> list[tuple[float, float]]:
    return [(_positive(rng), _positive(rng)) for _ in range(rng.randint(1, 20))]


def test_pair_ratios_pair_by_pair() -> None:
    assert pair_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 0.0]) == [2.0, 3.0]


@pytest.mark.parametrize("case", CASES)
def test_interval_holds_the_median_and_lies_within_the_ratios(case: int) -> None:
    data = _pairs(random.Random(case))
    fb, base = [a for a, _ in data], [b for _, b in data]
    got = ratio_stats(fb, base)
    assert got is not None
    ratios = pair_ratios(fb, base)
    assert got.ratio == statistics.median(ratios)
    assert min(ratios) - 1e-9 <= got.lo <= got.hi <= max(ratios) + 1e-9
    assert got.pairs == len(data)


@pytest.mark.parametrize("case", CASES)
def test_bootstrap_is_reproducible_for_a_seed(case: int) -> None:
    rng = random.Random(case)
    ratios = [_positive(rng) for _ in range(rng.randint(2, 15))]
    seed = rng.randint(0, 2**32)
    assert bootstrap_interval(ratios, seed=seed) == bootstrap_interval(ratios, seed=seed)


def test_more_pairs_narrow_the_interval() -> None:
    few = [0.9, 1.1, 1.0, 0.8, 1.2]
    many = few * 6
    lo_f, hi_f = bootstrap_interval(few)
    lo_m, hi_m = bootstrap_interval(many)
    assert hi_m - lo_m < hi_f - lo_f


def test_identical_pairs_give_a_point_interval() -> None:
    assert ratio_stats([3.0] * 5, [2.0] * 5) == RatioStats(1.5, 1.5, 1.5, 5)


def test_verdicts_for_an_upper_bound() -> None:
    assert verdict(RatioStats(0.6, 0.5, 0.69, 5), "ratio_max", 0.7).state == "met"
    missed = verdict(RatioStats(0.84, 0.8, 0.9, 5), "ratio_max", 0.7)
    assert (missed.state, missed.text) == ("missed", "missed by 20 %")
    assert verdict(RatioStats(0.7, 0.6, 0.8, 5), "ratio_max", 0.7).state == "undecided"


def test_verdicts_for_a_lower_bound() -> None:
    assert verdict(RatioStats(1.2, 1.0, 1.3, 5), "ratio_min", 1.0).state == "met"
    missed = verdict(RatioStats(0.9, 0.85, 0.95, 5), "ratio_min", 1.0)
    assert (missed.state, missed.text) == ("missed", "missed by 10 %")
    assert not verdict(RatioStats(1.0, 0.9, 1.1, 5), "ratio_min", 1.0).decided


@pytest.mark.parametrize("case", CASES)
def test_a_decided_verdict_has_the_whole_interval_on_one_side(case: int) -> None:
    rng = random.Random(case)
    data = _pairs(rng)
    target = rng.uniform(0.1, 10)
    kind = rng.choice(["ratio_max", "ratio_min"])
    got = ratio_stats([a for a, _ in data], [b for _, b in data])
    assert got is not None
    v = verdict(got, kind, target)  # type: ignore[arg-type]
    if v.state == "undecided":
        assert got.lo <= target <= got.hi
    else:
        inside = got.hi <= target if kind == "ratio_max" else got.lo >= target
        assert inside == (v.state == "met")


def _sides(fb: list[float]) -> dict[str, Callable[[int], float]]:
    return {"flowbridge": lambda rep: fb[rep % len(fb)], "baseline": lambda rep: 1.0}


def test_alternate_adds_pairs_while_the_interval_straddles_the_target() -> None:
    target = Target("≤ 1.0x", "ratio_max", 1.0)
    noisy = alternate(3, _sides([0.8, 1.2, 0.9, 1.1]), lambda _m: None, target=target, max_reps=9)
    assert len(noisy["flowbridge"]) == len(noisy["baseline"]) == 9
    clear = alternate(3, _sides([0.5, 0.6, 0.55]), lambda _m: None, target=target, max_reps=9)
    assert len(clear["flowbridge"]) == 3


def test_alternate_without_a_target_runs_the_repetitions_asked() -> None:
    got = alternate(4, _sides([0.8, 1.2]), lambda _m: None, max_reps=15)
    assert len(got["baseline"]) == 4
