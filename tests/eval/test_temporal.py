"""eval.temporal: VBench flickering, warping error, object persistence and feature consistency separate good
from bad."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from eval.broken import blank, flickering, objects_removed, recoloured, shuffled, teleported, vanished
from eval.clip import EvalClip
from eval.temporal import (
    FeatureConsistency,
    motion_boundary,
    object_persistence,
    temporal_flickering,
    warping_error,
)

KEYS = ("fall_0", "throw_1", "collide_0", "slide_0")
"""Clips used for the Farneback-based checks (each costs ~0.3 s per variant)."""


def test_flickering_formula_on_known_videos():
    still = np.full((5, 16, 16, 3), 90, np.uint8)
    assert temporal_flickering(still) == 1.0
    strobe = np.zeros((4, 16, 16, 3), np.uint8)
    strobe[1::2] = 255
    assert temporal_flickering(strobe) == 0.0
    half = still.copy()
    half[1::2] += 51  # |diff| = 51 everywhere -> (255 - 51) / 255
    assert temporal_flickering(half) == pytest.approx(0.8)


def test_flickering_near_one_on_truth_and_lower_on_jitter(world, world_mp4):
    truth = [temporal_flickering(world_mp4[k].video) for k in world]
    jitter = [temporal_flickering(flickering(world[k]).video) for k in world]
    assert min(truth) > 0.98
    assert all(j < t - 0.03 for t, j in zip(truth, jitter, strict=True))


def test_warping_error_small_on_truth_and_large_on_flicker_and_shuffle(world, world_mp4):
    still = np.repeat(world["static_0"].video[:1], 6, axis=0)
    assert warping_error(still) < 1e-4
    for key in KEYS:
        truth = warping_error(world_mp4[key].video)
        assert truth < 1e-3, key
        assert warping_error(flickering(world[key]).video) > 5 * truth, key
        assert warping_error(shuffled(world[key]).video) > 3 * truth, key


def test_warping_error_averages_over_channels_as_lai():
    a = np.full((2, 32, 32, 3), 100, np.uint8)
    a[1, ..., 0] += 51  # no motion (uniform frames: zero flow), the red channel off by 51 / 255 = 0.2
    # Lai et al. divide the squared error by the count of valid pixel-channels: 0.2^2 / 3, not 0.2^2
    assert warping_error(a) == pytest.approx(0.04 / 3, rel=1e-3)


def test_motion_boundaries_use_forward_differences():
    flow = np.zeros((8, 8, 2), np.float32)
    flow[:, 5:, 0] = 1.0  # a step of the x flow between columns 4 and 5
    boundary = motion_boundary(flow)
    # f[:, 4] - f[:, 5] = -1 marks column 4 only (central differences would mark columns 4 and 5)
    assert boundary[:, 4].all() and not boundary[:, 5:].any() and not boundary[:, :4].any()


def test_persistence_perfect_on_truth(world_mp4):
    for key, clip in world_mp4.items():
        assert object_persistence(clip) == {
            "persistence": 1.0,
            "persistence_breaks": 0.0,
            "object_count_error": 0.0,
        }, key
    bare = dataclasses.replace(
        world_mp4["collide_1"], meta=None
    )  # objects of the first frame are the reference
    assert object_persistence(bare)["persistence"] == 1.0


def test_persistence_breaks_on_teleports_vanishing_recolouring_and_shuffling(world):
    for key in KEYS:
        clip = world[key]
        jumped = object_persistence(teleported(clip))
        assert jumped["persistence_breaks"] >= 2 and jumped["persistence"] < 0.97, key
        for breaker in (vanished, recoloured):
            assert object_persistence(breaker(clip))["persistence"] < 0.6, (key, breaker.__name__)
    assert object_persistence(vanished(world["fall_1"]))["object_count_error"] > 0.3
    assert object_persistence(shuffled(world["throw_1"]))["persistence"] < 0.9


def test_missing_objects_break_persistence(world):
    for key, clip in world.items():
        for breaker in (blank, objects_removed):
            assert object_persistence(breaker(clip))["persistence"] == 0.0, (key, breaker.__name__)
        # without metadata the prompt's colours are expected: a named colour never drawn breaks everything
        bare = dataclasses.replace(clip, meta=None, prompt=clip.prompt + " A cyan box sits there.")
        assert object_persistence(bare)["persistence"] == 0.0, key


def test_conditioned_persistence_judges_transitions_into_generated_frames(world):
    clip = world["collide_0"]
    video = clip.video.copy()
    video[:10] = blank(clip).video[:10]  # nothing in the first 10 (given) frames
    gapped = dataclasses.replace(clip, video=video)
    assert object_persistence(gapped)["persistence"] < 0.8
    # given 10 frames: the step 9 -> 10 into the first generated frame is judged (and broken), no other
    assert object_persistence(dataclasses.replace(gapped, given_frames=10))["persistence"] == pytest.approx(
        1 - 1 / 38
    )
    assert object_persistence(dataclasses.replace(gapped, given_frames=11))["persistence"] == 1.0


def _color_encoder(path) -> None:
    """A tiny TorchScript 'image encoder': per-channel means and a 4x4 pooled grid as features."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())
    torch.jit.script(model).save(str(path))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is the weights format
def test_feature_consistency_follows_the_vbench_formula(tmp_path):
    path = tmp_path / "encoder.pt"
    _color_encoder(path)
    metric = FeatureConsistency(str(path), preset="dino", size=32)
    video = np.zeros((3, 32, 32, 3), np.uint8)
    video[:] = 120
    video[0, :16] = 250  # three frames with different layouts
    video[1, :, :16] = 250
    video[2, 16:] = 250
    f = metric.features(video)
    s01, s12, s02 = (max(0.0, float(f[i] @ f[j])) for i, j in ((0, 1), (1, 2), (0, 2)))  # VBench clamps at 0
    assert 0 < s01 < 1 and 0 < s12 < 1
    expected = ((s01 + s01) / 2 + (s12 + s02) / 2) / 2
    assert metric(EvalClip(video, 24.0))["subject_consistency"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is the weights format
def test_feature_consistency_high_on_truth_and_lower_when_flickering_or_shuffled(tmp_path, world, world_mp4):
    path = tmp_path / "encoder.pt"
    _color_encoder(path)
    metric = FeatureConsistency(str(path), preset="clip", size=32)
    for key in ("fall_0", "collide_1"):
        truth = metric(world_mp4[key])["background_consistency"]
        assert truth > 0.95, key
        assert metric(flickering(world[key]))["background_consistency"] < truth - 0.01, key
        assert metric(shuffled(world[key]))["background_consistency"] < truth - 0.002, key
    with pytest.raises(ValueError, match="preset"):
        FeatureConsistency(str(path), preset="i3d")
