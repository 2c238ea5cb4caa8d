"""Bootstrap intervals and paired win rates against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.stats import interval, paired


def test_two_values_give_the_hand_computed_percentiles():
    # resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5th and 97.5th
    # percentiles are 0 and 1
    iv = interval([0.0, 1.0])
    assert (iv.mean, iv.lo, iv.hi, iv.n, iv.undefined) == (0.5, 0.0, 1.0, 2, 0)


def test_interval_is_reproducible_and_covers_the_mean():
    values = list(np.random.default_rng(3).normal(size=40))
    a, b = interval(values), interval(values)
    assert a == b  # fixed seed: the same clips give the same interval
    assert a.lo < a.mean < a.hi
    # the bootstrap standard error of a mean is ~ std / sqrt(n): the 95% half-width is ~1.96 of it
    half = (a.hi - a.lo) / 2
    assert half == pytest.approx(1.96 * np.std(values) / math.sqrt(40), rel=0.08)


def test_resampling_scenes_not_clips():
    # three seeds of scene a all 0, three of scene b all 1: only two independent scenes, so the interval
    # must span [0, 1], not the narrow one six independent clips would give
    values = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    clustered = interval(values, ["a", "a", "a", "b", "b", "b"])
    assert (clustered.lo, clustered.hi, clustered.n) == (0.0, 1.0, 6)
    naive = interval(values)
    assert naive.lo > 0.1 and naive.hi < 0.9


def test_undefined_values_are_counted_not_dropped_silently():
    iv = interval([1.0, math.nan, None, 0.0])
    assert (iv.mean, iv.n, iv.undefined) == (0.5, 2, 2)
    empty = interval([math.nan, None])
    assert (empty.mean, empty.lo, empty.hi, empty.n, empty.undefined) == (None, None, None, 0, 2)
    single = interval([0.25, math.nan])
    assert (single.mean, single.lo, single.hi, single.n) == (0.25, 0.25, 0.25, 1)


def test_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="cluster labels"):
        interval([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="confidence"):
        interval([1.0, 2.0], confidence=1.5)


def test_paired_win_rate_by_hand():
    group = {"s0": 1.0, "s1": 0.0, "s2": 0.5, "s3": 0.9, "s4": math.nan}
    reference = {"s0": 0.0, "s1": 1.0, "s2": 0.5, "s3": 0.2, "s4": 1.0, "s5": 1.0}
    # higher is better: wins 1, 0, 0.5 (tie), 1 over the 4 scenes both have finite -> 0.625
    up = paired(group, reference, "higher")
    assert up["n"] == 4 and up["win_rate"] == pytest.approx(0.625)
    assert up["diff"] == pytest.approx((1.0 - 1.0 + 0.0 + 0.7) / 4)
    assert 0.0 <= up["win_rate_lo"] <= 0.625 <= up["win_rate_hi"] <= 1.0
    down = paired(group, reference, "lower")  # the same scenes, the other way round: 0, 1, 0.5, 0
    assert down["win_rate"] == pytest.approx(0.375)
    zero = paired({"a": -0.1, "b": 0.3}, {"a": 0.2, "b": -0.2}, "zero")  # |x| closer to 0 wins: 1, 0
    assert zero["win_rate"] == pytest.approx(0.5)
    none = paired({"a": math.nan}, {"a": 1.0}, "higher")
    assert none["n"] == 0 and none["win_rate"] is None
    with pytest.raises(ValueError, match="way must be"):
        paired(group, reference, "up")
