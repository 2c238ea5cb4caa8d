"""Issue #18's acceptance test: on the world suite, ground truth passes every headline number, and every
deliberately broken copy of it (frozen, blank, mirrored left/right, gravity reversed, audio shifted 200 ms,
objects removed, audio silenced) fails at least one headline number by more than the 95 % intervals: the
broken group's interval lies entirely on the worse side of the ground truth's."""

from __future__ import annotations

import pytest

from eval.suite import run
from eval.summary import HEADLINE, separated
from sora.config import compose

BROKEN = [
    "frozen",
    "blank",
    "mirrored",
    "gravity_reversed",
    "audio_shifted",
    "objects_removed",
    "audio_silenced",
]
METRICS = "[physics_gt,spatial,objects,motion,persistence,sync]"
"""The per-clip metrics behind the headline (eval.METRICS names)."""

PASS = {
    "left_right_accuracy": (">=", 0.9),
    "persistence": (">=", 0.9),
    "detection_rate": (">=", 0.95),
    "sync_f1": (">=", 0.5),
    "pos_err_px": ("<=", 1.0),
    "dynamic_degree": (">=", 0.9),
    "colour_accuracy": (">=", 0.9),
}
"""What ground truth must reach on each headline number (its mean; the lower end of its interval for rates
where higher is better must stay above what any broken clip reaches)."""

EXPECTED = {
    "frozen": {"dynamic_degree"},
    "blank": {"detection_rate", "dynamic_degree"},
    "mirrored": {"left_right_accuracy", "pos_err_px"},
    "gravity_reversed": {"pos_err_px"},
    "audio_shifted": {"sync_f1"},
    "objects_removed": {"detection_rate"},
    "audio_silenced": {"sync_f1"},
}
"""The headline each defect is built to fail (it may fail more)."""


def _run(out, scenes: int, frames: int, families: str) -> dict:
    cfg = compose(
        "eval",
        [
            "checkpoint=ground_truth",
            f"out_dir={out}",
            f"suite.num_scenes={scenes}",
            f"suite.families={families}",
            f"suite.num_frames={frames}",
            f"suite.metrics={METRICS}",
            "suite.distribution_metrics=[]",
            f"suite.broken=[{','.join(BROKEN)}]",
        ],
    )
    return run(cfg)


def _check(summary: dict, scenes: int) -> None:
    gt = summary["ground_truth"]
    assert set(HEADLINE) == set(PASS)
    for name, (op, bound) in PASS.items():
        assert gt[f"{name}_n"] == scenes, (name, gt[f"{name}_n"])  # defined on every scene, none dropped
        assert gt[name] >= bound if op == ">=" else gt[name] <= bound, (name, gt[name])
    for kind in BROKEN:
        row = summary[f"broken/{kind}"]
        assert row["clips"] == scenes and row["clips_failed"] == 0, kind
        failed = {name for name in HEADLINE if separated(row, gt, name)}
        assert EXPECTED[kind] <= failed, (kind, failed)


def test_every_broken_clip_fails_a_headline_beyond_its_interval(tmp_path):
    """The fast version: two scenes with contacts and left/right relations within 25 frames (~9 s of CPU)."""
    results = _run(tmp_path, 2, 25, "[throw,fall]")
    _check(results["summary"], 2)


@pytest.mark.slow
def test_acceptance_on_more_scenes(tmp_path):
    """Six scenes of three families, two seconds each (~2 min on 2 shared cores)."""
    results = _run(tmp_path, 6, 48, "[fall,throw,collide]")
    _check(results["summary"], 6)
