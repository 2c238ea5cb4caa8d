"""Uncertainty for the suite's summary: bootstrap confidence intervals of a mean and paired win rates.

Every summary number of :mod:`eval.suite` is a mean over the clips of a group and comes with ``n`` (clips
where it is defined) and a 95 % percentile-bootstrap interval (Efron & Tibshirani 1993, ch. 13):

* **cluster bootstrap over scenes**: the resampled unit is the scene, not the clip, so several seeds of one
  scene (``suite.seeds_per_scene``) do not narrow the interval as if they were independent scenes; with one
  clip per scene it is the ordinary bootstrap of the mean;
* :data:`SAMPLES` = 2000 resamples drawn from ``numpy.random.default_rng(SEED)`` with :data:`SEED` = 0, so a
  rerun on the same clips gives the same interval;
* the interval is the 2.5th and 97.5th percentiles of the resampled means; with a single scene (or all
  values equal) it collapses to the mean: there is nothing to resample, which the ``_n`` beside it shows.

A value that is not finite (NaN: the quantity is undefined for that clip, or the metric failed) never enters a
mean silently: :func:`interval` counts it in ``undefined``, and the suite prints that count beside ``_n``.

:func:`paired` compares two groups scene by scene (a model against the ground truth or the baseline): per
scene the mean over that scene's clips on each side, a win when the group is better in the metric's direction
(a tie counts one half), and the win rate with the same scene bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

SAMPLES = 2000
"""Bootstrap resamples per interval."""
SEED = 0
"""Seed of the resampling generator (fixed: the same clips give the same interval)."""
CONFIDENCE = 0.95
"""Coverage of every interval."""


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap interval: ``n`` finite values, ``undefined`` non-finite ones left out."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    undefined: int


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _resampled_means(sums: np.ndarray, counts: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Means of ``samples`` resamples of the clusters (with replacement): ``(samples,)``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(samples, len(sums)))
    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def interval(
    values: Sequence[float | None],
    clusters: Sequence[Hashable] | None = None,
    *,
    samples: int = SAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean of the finite ``values`` with a percentile-bootstrap interval, resampling ``clusters`` (one label
    per value, e.g. the scene id; ``None``: every value its own cluster)."""
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster labels")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    labels = list(range(len(values))) if clusters is None else list(clusters)
    kept = [(c, float(v)) for c, v in zip(labels, values) if _finite(v)]
    undefined = len(values) - len(kept)
    if not kept:
        return Interval(None, None, None, 0, undefined)
    order = list(dict.fromkeys(c for c, _ in kept))
    position = {c: i for i, c in enumerate(order)}
    sums, counts = np.zeros(len(order)), np.zeros(len(order))
    for c, v in kept:
        sums[position[c]] += v
        counts[position[c]] += 1
    mean = float(sums.sum() / counts.sum())
    if len(order) == 1:
        return Interval(mean, mean, mean, len(kept), undefined)
    means = _resampled_means(sums, counts, samples, seed)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    # the percentile of identical floats can differ from their mean in the last bit: keep lo <= mean <= hi
    return Interval(mean, float(min(lo, mean)), float(max(hi, mean)), len(kept), undefined)


def paired(
    group: dict[Hashable, float | None],
    reference: dict[Hashable, float | None],
    way: str,
    *,
    samples: int = SAMPLES,
    seed: int = SEED,
) -> dict[str, float | int | None]:
    """Scene-by-scene comparison of ``group`` against ``reference`` (``{scene: value}``, each value the mean
    over the scene's clips) for a metric where ``way`` (``"higher"``, ``"lower"`` or ``"zero"``) is better.

    Returns ``win_rate`` (fraction of scenes where the group is better, ties one half) with ``win_rate_lo`` /
    ``win_rate_hi``, the mean difference ``diff`` (group - reference) with ``diff_lo`` / ``diff_hi``, and
    ``n`` (scenes where both are finite)."""
    if way not in ("higher", "lower", "zero"):
        raise ValueError(f"way must be 'higher', 'lower' or 'zero', got {way!r}")
    scenes = [s for s in group if s in reference and _finite(group[s]) and _finite(reference[s])]
    empty = {"win_rate": None, "win_rate_lo": None, "win_rate_hi": None, "diff": None}
    if not scenes:
        return {**empty, "diff_lo": None, "diff_hi": None, "n": 0}
    a = np.array([group[s] for s in scenes], dtype=np.float64)
    b = np.array([reference[s] for s in scenes], dtype=np.float64)
    score_a, score_b = {"higher": (-a, -b), "lower": (a, b), "zero": (np.abs(a), np.abs(b))}[way]
    close = np.isclose(score_a, score_b, rtol=1e-9, atol=1e-12)
    wins = np.where(close, 0.5, (score_a < score_b).astype(np.float64))
    win = interval(list(wins), samples=samples, seed=seed)
    diff = interval(list(a - b), samples=samples, seed=seed)
    return {
        "win_rate": win.mean,
        "win_rate_lo": win.lo,
        "win_rate_hi": win.hi,
        "diff": diff.mean,
        "diff_lo": diff.lo,
        "diff_hi": diff.hi,
        "n": len(scenes),
    }
