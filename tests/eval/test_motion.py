"""eval.motion: the motion guard. Ground truth moves and moves smoothly; frozen and blank clips do not move,
shuffled frames do not move smoothly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eval.broken import blank, frozen, shuffled
from eval.clip import EvalClip
from eval.motion import (
    dynamic_scores,
    interpolate_middle,
    motion_metrics,
    motion_smoothness_score,
    peak_flow,
)

MOVING = ("fall_0", "fall_1", "throw_0", "throw_1", "slide_0", "collide_0", "collide_1")


def test_peak_flow_averages_the_largest_five_percent():
    flow = np.zeros((10, 10, 2), np.float32)  # 100 pixels: the top 5 are averaged
    flow[0, :5, 0] = [3.0, 4.0, 5.0, 6.0, 7.0]
    flow[1, 0, 1] = 2.0  # sixth largest: left out
    assert peak_flow(flow) == pytest.approx(5.0)


def test_vbench_sampling_threshold_and_count():
    video = np.zeros((48, 64, 64, 3), np.uint8)
    scores, threshold, needed = dynamic_scores(video, fps=24.0)
    assert len(scores) == 15  # every 3rd frame at 24 fps: 16 samples
    assert threshold == pytest.approx(6.0 * 64 / 256) and needed == 4
    assert dynamic_scores(video[:12], fps=8.0)[1:] == (pytest.approx(1.5), 3)  # every frame at 8 fps


def _moving_square(step: float, frames: int = 24) -> np.ndarray:
    video = np.full((frames, 64, 64, 3), 20, np.uint8)
    for t in range(frames):
        x = int(round(8 + step * t))
        video[t, 24:36, x : x + 12] = (230, 40, 40)
    return video


def test_a_square_moving_steadily_is_dynamic_and_smooth():
    video = _moving_square(1.0)  # 3 px per sampled pair at 24 fps, threshold 1.5 px
    result = motion_metrics(EvalClip(video, 24.0))
    assert result["dynamic_degree"] == 1.0 and result["motion_smoothness"] > 0.99
    still = motion_metrics(EvalClip(np.repeat(video[:1], 24, axis=0), 24.0))
    assert still["dynamic_degree"] == 0.0 and still["motion_smoothness"] == 1.0


def test_interpolation_follows_the_motion():
    video = _moving_square(3.0)  # 6 px between the two neighbours
    middle = interpolate_middle(video[4], video[6])
    assert np.abs(middle - video[5]).mean() < 0.05  # a plain blend of the neighbours is off by ~1.5
    assert np.abs((video[4].astype(np.float32) + video[6]) / 2 - video[5]).mean() > 1.0


def test_ground_truth_moves_and_frozen_or_blank_clips_do_not(world, world_mp4):
    for key in MOVING:
        truth = motion_metrics(world_mp4[key])
        assert truth["dynamic_degree"] == 1.0 and truth["motion_smoothness"] > 0.99, key
        for breaker in (frozen, blank):
            broken = motion_metrics(breaker(world[key]))
            assert broken["dynamic_degree"] == 0.0 and broken["dynamic_pairs"] == 0.0, (key, breaker.__name__)
    # a still scene asks for no motion: its truth has no dynamic_degree (not a 0 to average in)
    still = motion_metrics(world_mp4["static_0"])
    assert "dynamic_degree" not in still and still["motion_smoothness"] > 0.999
    assert motion_metrics(dataclasses.replace(world_mp4["static_0"], meta=None))["dynamic_degree"] == 0.0


def test_shuffled_frames_are_not_smooth(world, world_mp4):
    for key in MOVING:
        truth = motion_smoothness_score(world_mp4[key].video)
        assert motion_smoothness_score(shuffled(world[key]).video) < truth - 0.005, key


def test_a_frozen_continuation_of_given_frames_is_not_dynamic(world):
    clip = world["fall_1"]
    video = clip.video.copy()
    video[24:] = video[23]  # the model froze after the 24 given frames
    stalled = dataclasses.replace(clip, video=video)
    assert motion_metrics(stalled)["dynamic_degree"] == 1.0  # the given frames move
    assert motion_metrics(dataclasses.replace(stalled, given_frames=24))["dynamic_degree"] == 0.0
    with pytest.raises(ValueError, match="given_frames"):
        dataclasses.replace(clip, given_frames=clip.num_frames)
