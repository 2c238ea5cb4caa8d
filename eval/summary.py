"""The suite's numbers from its per-clip records: group means with n and bootstrap intervals, the same per
scene family, and paired scene-by-scene comparisons (win rates) against the ground truth and the baseline.

A record is one scored clip of :mod:`eval.suite` (``group``, ``scene_id``, ``family``, ``metrics``,
``failures``). :data:`SUMMARY` names the numbers quoted per group; each is the mean of one per-clip key over
the group's clips, written with four companions: ``_n`` (clips where the key is finite), ``_lo`` / ``_hi``
(95 % scene-bootstrap interval, :mod:`eval.stats`) and ``_undefined`` (clips where it is NaN or its metric
could not run: counted, never silently dropped). :data:`HEADLINE` are the ones no degenerate generator can
max out together; the others are diagnostics.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from eval.report import LOWER, NEUTRAL, direction
from eval.stats import interval, paired

SUMMARY: dict[str, tuple[str, str]] = {
    "left_right_accuracy": (
        "left_right_accuracy",
        "fraction of clips whose prompt's left/right relations hold in every frame where they are a state "
        "(both objects found; strict pass; generated frames only for i2v/extend)",
    ),
    "persistence": (
        "persistence",
        "mean fraction of frame transitions where every object keeps its colour, size and a plausible motion "
        "(a missing object is a break)",
    ),
    "detection_rate": (
        "detection_rate",
        "mean fraction of ground-truth object-frames where the object is found",
    ),
    "sync_f1": (
        "sync_f1",
        "mean F1 of the clip's own audio onsets against contacts seen in its own video (within a tolerance)",
    ),
    "pos_err_px": (
        "pos_err_px",
        "mean tracked centroid error against the ground-truth tracks, pixels (a missing object counts as a "
        "miss at the frame diagonal)",
    ),
    "dynamic_degree": (
        "dynamic_degree",
        "fraction of clips whose optical flow is large enough to count as moving (VBench dynamic degree)",
    ),
    "colour_accuracy": (
        "colour_accuracy",
        "mean fraction of the objects the prompt names that are found with the named colour (and shape)",
    ),
    "vertical_accuracy": ("vertical_accuracy", "as left_right_accuracy, for above/below relations"),
    "motion_smoothness": (
        "motion_smoothness",
        "frame-interpolation agreement of consecutive frames ([0, 1], VBench-style, weight-free)",
    ),
    "onset_f1": ("onset_f1", "mean F1 of the audio onsets against the ground-truth contact timeline"),
    "sync_lag_s": ("sync_lag_s", "mean lag of audio onsets behind the video's own contacts, seconds"),
    "loudness_diff_db": ("loudness_diff_db", "mean loudness difference to the ground truth's audio, dB"),
    "gravity_fit_rate": (
        "gravity_fit",
        "fraction of clips with enough free flight whose fitted g is within 25 % of the world's",
    ),
}
"""The numbers quoted per group in ``results.json["summary"]``: name -> (per-clip key averaged, meaning)."""

HEADLINE = (
    "left_right_accuracy",
    "persistence",
    "detection_rate",
    "sync_f1",
    "pos_err_px",
    "dynamic_degree",
    "colour_accuracy",
)
"""The headline numbers (DESIGN.md), each with ``_n``, ``_lo``, ``_hi`` companions in the summary."""

COMPANIONS = ("_n", "_lo", "_hi", "_undefined")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _value(record: dict, key: str) -> float:
    value = record["metrics"].get(key)
    return float(value) if _finite(value) else math.nan


def number_cells(rows: list[dict], names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """``{name: mean, name_n, name_lo, name_hi, name_undefined}`` over ``rows`` for :data:`SUMMARY` names
    (the bootstrap resamples scenes)."""
    out: dict[str, Any] = {}
    for name in names or SUMMARY:
        key = SUMMARY[name][0]
        iv = interval([_value(r, key) for r in rows], [r["scene_id"] for r in rows])
        out.update(
            {
                name: iv.mean,
                f"{name}_n": iv.n,
                f"{name}_lo": iv.lo,
                f"{name}_hi": iv.hi,
                f"{name}_undefined": iv.undefined,
            }
        )
    return out


def aggregate(records: list[dict], skipped: list[dict], groups: list[str]) -> dict[str, dict]:
    """Per group: clip counts, the mean, count and interval of every per-clip key, failures per metric."""
    out = {}
    for group in groups:
        rows = [r for r in records if r["group"] == group]
        keys = sorted({k for r in rows for k in r["metrics"]})
        failures: Counter = Counter()
        for r in rows:
            failures.update(f"{m}:{f['kind']}" for m, f in r["failures"].items())
        intervals = {k: interval([_value(r, k) for r in rows], [r["scene_id"] for r in rows]) for k in keys}
        out[group] = {
            "clips": len(rows),
            "clips_failed": sum(s["group"] == group for s in skipped),
            "mean": {k: iv.mean for k, iv in intervals.items()},
            "count": {k: iv.n for k, iv in intervals.items()},
            "lo": {k: iv.lo for k, iv in intervals.items()},
            "hi": {k: iv.hi for k, iv in intervals.items()},
            "failures": dict(sorted(failures.items())),
        }
    return out


def summarise(records: list[dict], stats: dict[str, dict], distribution: dict[str, dict]) -> dict[str, dict]:
    """``results.json["summary"]``: per group the :data:`SUMMARY` numbers with their companions, the
    set-level distances, and the counters."""
    summary = {}
    for group, g in stats.items():
        row: dict[str, Any] = number_cells([r for r in records if r["group"] == group])
        row.update({k: v for k, v in distribution.get(group, {}).items() if not k.endswith("_error")})
        row["clips"] = g["clips"]
        row["clips_failed"] = g["clips_failed"]
        row["metric_errors"] = sum(n for k, n in g["failures"].items() if k.endswith(":error"))
        summary[group] = row
    return summary


def by_family(records: list[dict], groups: list[str]) -> dict[str, dict[str, dict]]:
    """``{group: {family: cells}}``: the :data:`SUMMARY` numbers of each scene family (plus ``clips``)."""
    out: dict[str, dict[str, dict]] = {}
    for group in groups:
        rows = [r for r in records if r["group"] == group]
        families = list(dict.fromkeys(r["family"] for r in rows))
        out[group] = {
            f: {
                **number_cells([r for r in rows if r["family"] == f]),
                "clips": sum(r["family"] == f for r in rows),
            }
            for f in families
        }
    return out


def per_scene(rows: list[dict], key: str) -> dict[str, float]:
    """Mean of ``key`` over each scene's clips (several seeds), NaN where none is finite."""
    values: dict[str, list[float]] = {}
    for r in rows:
        values.setdefault(r["scene_id"], []).append(_value(r, key))
    return {
        s: float(np.mean([v for v in vs if math.isfinite(v)])) if any(map(math.isfinite, vs)) else math.nan
        for s, vs in values.items()
    }


def references(group: str, groups: list[str], ground_truth: str) -> list[str]:
    """What a group is compared with, scene by scene: the ground truth, and for ``generated/MODE`` the
    ``baseline/MODE`` group when there is one."""
    if group == ground_truth:
        return []
    out = [ground_truth] if ground_truth in groups else []
    kind, _, mode = group.partition("/")
    if kind == "generated" and f"baseline/{mode}" in groups:
        out.append(f"baseline/{mode}")
    return out


def paired_comparisons(records: list[dict], groups: list[str], ground_truth: str) -> dict[str, dict]:
    """``{group: {reference: {name: paired(...)}}}`` for every :data:`SUMMARY` name with a better side
    (:func:`eval.stats.paired`: win rate and mean difference with scene-bootstrap intervals)."""
    out: dict[str, dict] = {}
    for group in groups:
        rows = [r for r in records if r["group"] == group]
        for ref in references(group, groups, ground_truth):
            ref_rows = [r for r in records if r["group"] == ref]
            cells = {}
            for name, (key, _) in SUMMARY.items():
                way = direction(name)
                if way == NEUTRAL:
                    continue
                cells[name] = paired(per_scene(rows, key), per_scene(ref_rows, key), way)
            out.setdefault(group, {})[ref] = cells
    return out


def separated(row: dict, reference: dict, name: str) -> bool:
    """Whether ``row``'s interval of ``name`` lies entirely on the worse side of ``reference``'s interval."""
    lo, hi, ref_lo, ref_hi = (
        d.get(f"{name}{s}") for d, s in ((row, "_lo"), (row, "_hi"), (reference, "_lo"), (reference, "_hi"))
    )
    if not all(_finite(v) for v in (lo, hi, ref_lo, ref_hi)):
        return False
    return bool(lo > ref_hi) if direction(name) == LOWER else bool(hi < ref_lo)
