"""eval.broken: each defect is what it says, and each fails the headline metric it targets while the ground
truth passes it (the per-clip half of issue 18's acceptance; the suite adds n and intervals)."""

from __future__ import annotations

import numpy as np
import pytest

from eval import METRICS
from eval.broken import (
    BROKEN,
    audio_shifted,
    audio_silenced,
    blank,
    compressed,
    frozen,
    objects_removed,
)
from eval.tracking import default_palette, label_colors


def test_defects_are_what_they_say(world):
    clip = world["fall_0"]
    still = frozen(clip)
    assert (still.video == clip.video[:1]).all() and np.array_equal(still.audio, clip.audio)
    assert not blank(clip).video.any() and blank(clip).video.shape == clip.video.shape
    empty = objects_removed(clip)
    assert (label_colors(empty.video, default_palette()) == -1).all()  # no object pixel left
    assert (empty.video[0, :, :4] == clip.video[0, :, :4]).all()  # the backdrop is unchanged at the edge
    silent = audio_silenced(clip)
    assert silent.audio.shape == clip.audio.shape and not silent.audio.any()
    late = audio_shifted(clip)  # 200 ms by default
    n = round(0.2 * clip.sample_rate)
    assert not late.audio[:, :n].any() and np.array_equal(late.audio[:, n:], clip.audio[:, :-n])
    assert {"frozen", "blank", "objects_removed", "audio_silenced", "mirrored", "gravity_reversed"} <= set(
        BROKEN
    ) and {"teleported", "shuffled", "audio_shifted"} <= set(BROKEN)


# kind -> (metric, key, the worst the ground truth may score, the best the broken clips may score on
# average); every key here is higher-is-better
TARGETS = {
    "frozen": [("motion", "dynamic_degree", 1.0, 0.0)],
    "blank": [
        ("objects", "detection_rate", 1.0, 0.0),
        ("persistence", "persistence", 1.0, 0.0),
        ("motion", "dynamic_degree", 1.0, 0.0),
    ],
    "mirrored": [("spatial", "left_right_accuracy", 1.0, 0.0)],
    "gravity_reversed": [("physics_laws", "gravity_fit", 1.0, 0.0)],
    "teleported": [("persistence", "persistence", 1.0, 0.96)],
    "audio_shifted": [("sync", "sync_f1", 0.6, 0.3)],
    "audio_silenced": [("sync", "sync_f1", 0.6, 0.0), ("loudness", "loudness_db", -45.0, -100.0)],
    "objects_removed": [
        ("objects", "detection_rate", 1.0, 0.0),
        ("objects", "colour_accuracy", 1.0, 0.0),
    ],
    "shuffled": [("motion", "motion_smoothness", 0.99, 0.99)],
}


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_each_broken_kind_fails_the_headline_it_targets(kind, world, moving):
    for metric, key, truth_floor, broken_ceiling in TARGETS[kind]:
        truth = [METRICS[metric](moving[k])[key] for k in moving]
        broken = [METRICS[metric](compressed(BROKEN[kind](world[k])))[key] for k in moving]
        assert min(truth) >= truth_floor, (kind, key, truth)
        assert np.mean(broken) <= broken_ceiling, (kind, key, broken)
        assert np.mean(broken) < np.mean(truth), (kind, key)
