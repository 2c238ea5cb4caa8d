"""eval.physics (and the shared colour tracker): ground truth scores near the best, broken physics clearly
worse."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from eval import METRICS, MissingInput
from eval.broken import (
    audio_silenced,
    blank,
    compressed,
    frozen,
    gravity_reversed,
    interpenetrating,
    mirrored,
    objects_removed,
    shuffled,
    teleported,
    time_reversed,
    vanished,
)
from eval.physics import (
    OVERLAP_TOLERANCE,
    RESTITUTION_TOLERANCE,
    failure_distance,
    fit_gravity,
    motion_masks,
    physics_gt,
    physics_iq,
    physics_laws,
    truth_has_flight,
)
from eval.tracking import max_plausible_speed, track_clip


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def test_tracker_recovers_every_object_after_mp4(world_mp4):
    for key, clip in world_mp4.items():
        tracks = track_clip(clip, include_unexpected=True)
        assert all(tr.expected for tr in tracks.values()), f"{key}: spurious colour found"
        for tr in tracks.values():
            gt = clip.meta["tracks"][int(tr.key)]
            assert tr.visible.all(), f"{key}: object {tr.key} lost in {np.flatnonzero(~tr.visible)}"
            err = np.hypot(tr.x - np.asarray(gt["x"]), tr.y - np.asarray(gt["y"]))
            assert err.max() < 1.0, f"{key}: centroid off by {err.max():.2f} px"


def test_physics_gt_near_zero_on_ground_truth_and_large_on_broken(world, world_mp4, moving):
    gt = {k: physics_gt(clip) for k, clip in world_mp4.items()}
    assert max(r["pos_err_px"] for r in gt.values()) < 0.6
    assert max(r["vel_err_px_s"] for r in gt.values()) < 5.0
    assert max(r["shape_range_px"] for r in gt.values()) < 1.2
    gt_pos, gt_vel = _mean(gt[k]["pos_err_px"] for k in moving), _mean(gt[k]["vel_err_px_s"] for k in moving)
    # (breaker, how many times the ground truth's mean position / velocity error it must reach at least)
    for breaker, pos_factor, vel_factor in (
        (mirrored, 20, 5),
        (gravity_reversed, 20, 5),
        (shuffled, 10, 20),
        (teleported, 2, 3),  # 3 of 48 frames are off, by ~25 px
    ):
        broken = [physics_gt(breaker(world[k])) for k in moving]
        assert _mean(r["pos_err_px"] for r in broken) > pos_factor * gt_pos, breaker.__name__
        assert _mean(r["vel_err_px_s"] for r in broken) > vel_factor * gt_vel, breaker.__name__


def test_a_missing_object_costs_the_failure_distance(world, world_mp4):
    for key in ("fall_0", "collide_1", "static_0"):
        clip = world[key]
        diagonal = failure_distance(clip)
        assert diagonal == pytest.approx(np.hypot(64, 64))
        empty = physics_gt(blank(clip))  # nothing found: every frame costs the diagonal, not NaN
        assert empty["pos_err_px"] == pytest.approx(diagonal)
        assert empty["vel_err_px_s"] == pytest.approx(max_plausible_speed(clip))
        # one of the objects gone from mid-clip on: a quarter (2 objects) or a sixth (3) of the frames
        half = physics_gt(vanished(clip, start=24))
        share = 0.5 / len(clip.meta["objects"])
        assert half["pos_err_px"] == pytest.approx(share * diagonal, rel=0.02), key
        # a conditioned clip is scored on its generated frames only
        later = physics_gt(dataclasses.replace(vanished(clip, start=24), given_frames=24))
        assert later["pos_err_px"] == pytest.approx(2 * share * diagonal, rel=0.02), key
        assert physics_gt(dataclasses.replace(world_mp4[key], given_frames=24))["pos_err_px"] < 0.6
    frozen_err = [physics_gt(frozen(world[k]))["pos_err_px"] for k in ("fall_0", "throw_1", "collide_0")]
    assert min(frozen_err) > 5.0


def test_velocity_error_is_split_at_the_first_object_collision(world):
    clip = world["collide_0"]
    hit = min(c["frame"] for c in clip.meta["contacts"] if c["with"] == "object")
    result = physics_gt(teleported(clip, start=hit + 3))
    assert result["vel_err_after_px_s"] > 5 * result["vel_err_before_px_s"]
    assert "vel_err_before_px_s" not in physics_gt(world["static_0"])  # no collision, no split


def test_fit_gravity_recovers_a_parabola():
    fps, g = 24.0, 300.0
    frames = np.arange(20)
    t = frames / fps
    y = 10 - 50 * t + 0.5 * g * t**2
    fitted, residual, used = fit_gravity([(frames[:10], y[:10]), (frames[10:], y[10:] + 5.0)], fps)
    assert fitted == pytest.approx(g, rel=1e-6) and residual < 1e-6 and used == 20
    assert math.isnan(fit_gravity([(frames[:4], y[:4])], fps)[0])  # too little free flight


def test_gravity_fit_passes_ground_truth_and_fails_reversed_gravity(world, moving):
    gt = [physics_laws(clip) for clip in moving.values()]
    assert _mean(r["gravity_fit"] for r in gt) >= 0.8
    fitted = [r["gravity_fit_px_s2"] for r in gt if r["gravity_fit"] == 1]
    g = next(iter(moving.values())).meta["gravity_px_s2"]
    assert np.median(fitted) == pytest.approx(g, rel=0.05)
    reversed_ = [physics_laws(compressed(gravity_reversed(world[k]))) for k in moving]
    assert _mean(r["gravity_fit"] for r in reversed_) == 0.0
    assert _mean(r["gravity_fit_px_s2"] for r in reversed_) < 0
    still = physics_laws(world["static_0"])  # nothing should fly: no such content, the key is absent
    assert "gravity_fit" not in still and "gravity_fit_px_s2" not in still
    assert "gravity_fit" not in physics_laws(world["slide_0"])


def test_gravity_fit_fails_frozen_and_blank_clips_of_falling_scenes(world, moving):
    for key in moving:
        assert truth_has_flight(world[key]) and truth_has_flight(dataclasses.replace(world[key], meta=None))
        for breaker in (frozen, blank, objects_removed):
            result = physics_laws(breaker(world[key]))
            assert result["gravity_fit"] == 0.0, (key, breaker.__name__)  # a failure, never NaN
    assert not truth_has_flight(world["static_0"]) and not truth_has_flight(world["slide_0"])
    assert "gravity_fit" not in physics_laws(frozen(world["static_0"]))


def test_missing_objects_fail_the_teleport_and_overlap_checks(world, world_mp4):
    for key in ("fall_0", "collide_1", "static_0"):
        assert physics_laws(world_mp4[key])["objects_missing"] == 0.0
        gone = physics_laws(blank(world[key]))
        assert gone["objects_missing"] == len(world[key].meta["objects"])
        assert gone["no_teleport"] == 0.0 and gone["no_interpenetration"] == 0.0, key


def test_teleports_flagged_only_when_objects_jump(world, world_mp4):
    for key, clip in world_mp4.items():
        result = physics_laws(clip)
        assert result["no_teleport"] == 1.0 and result["max_jump_ratio"] < 0.5, key
    for key in ("fall_0", "throw_1", "collide_1", "slide_0"):
        jumped = physics_laws(compressed(teleported(world[key])))
        assert jumped["teleports"] >= 1 and jumped["max_jump_ratio"] > 1.2, key
        assert physics_laws(shuffled(world[key]))["teleports"] >= 3, key


def test_interpenetration_flagged_only_when_objects_overlap(world, world_mp4):
    truth = [physics_laws(clip)["interpenetration"] for clip in world_mp4.values()]
    assert max(truth) <= OVERLAP_TOLERANCE
    for key in ("fall_1", "collide_0", "static_0"):
        result = physics_laws(compressed(interpenetrating(world[key])))
        assert result["interpenetration"] > 2 * OVERLAP_TOLERANCE, key
        assert result["no_interpenetration"] == 0.0, key
        assert result["no_teleport"] == 1.0, key  # the objects glide into each other, nothing jumps


def test_bounces_lose_energy_forward_and_gain_it_backwards(world, moving):
    forward = [physics_laws(clip) for clip in moving.values()]
    assert sum(r.get("restitution_ok") == 1.0 for r in forward) >= 3
    assert not any(r.get("restitution_ok") == 0.0 for r in forward)
    backward = [physics_laws(time_reversed(world[k])) for k in moving]
    measured = [r for r in backward if "max_restitution" in r]  # absent without a measurable bounce
    assert len(measured) >= 3
    assert all(
        r["restitution_ok"] == 0.0 and r["max_restitution"] > 1 + RESTITUTION_TOLERANCE for r in measured
    )


def test_physics_iq_masks_follow_motion():
    video = np.zeros((6, 32, 32, 3), np.uint8)
    for t in range(6):
        video[t, 10:20, 4 * t : 4 * t + 8] = 255
    masks = motion_masks(video)
    assert not masks[0].any() and masks[1:].any(axis=(1, 2)).all()
    still = np.repeat(video[:1], 6, axis=0)
    assert not motion_masks(still).any()


def test_physics_iq_near_perfect_on_recompressed_truth_and_low_on_broken(world, world_mp4, moving):
    same = {k: physics_iq(dataclasses.replace(world_mp4[k], reference=world[k])) for k in moving}
    assert _mean(r["spatial_iou"] for r in same.values()) > 0.9
    assert _mean(r["spatiotemporal_iou"] for r in same.values()) > 0.85
    assert _mean(r["weighted_spatial_iou"] for r in same.values()) > 0.85
    assert max(r["mse"] for r in same.values()) < 1e-3
    for breaker in (mirrored, gravity_reversed):
        bad = {k: physics_iq(dataclasses.replace(breaker(world[k]), reference=world[k])) for k in moving}
        for name in ("spatial_iou", "spatiotemporal_iou", "weighted_spatial_iou"):
            assert _mean(r[name] for r in bad.values()) < _mean(r[name] for r in same.values()) - 0.25, name
            assert all(bad[k][name] < same[k][name] for k in moving), (breaker.__name__, name)
        assert min(bad[k]["mse"] / max(same[k]["mse"], 1e-9) for k in moving) > 10, breaker.__name__


def test_metrics_report_missing_inputs(world):
    clip = world["fall_0"]
    bare = dataclasses.replace(clip, meta=None, audio=None, prompt="")
    with pytest.raises(MissingInput, match="metadata"):
        physics_gt(bare)
    with pytest.raises(MissingInput, match="reference"):
        physics_iq(bare)
    assert physics_laws(bare)["gravity_fit"] == 1.0  # the laws need no ground truth


@pytest.mark.parametrize("breaker", [None, frozen, blank, objects_removed, audio_silenced, mirrored])
def test_every_registered_metric_returns_finite_floats(world, breaker):
    """The suite contract: floats, never NaN, on truth and on degenerate clips (a quantity that does not
    apply is an absent key or MissingInput, a failure is a failure value)."""
    for key in ("collide_0", "static_0"):
        clip = world[key] if breaker is None else breaker(world[key])
        clip = dataclasses.replace(clip, reference=world[key])
        for name, metric in METRICS.items():
            try:
                result = metric(clip)
            except MissingInput:
                continue
            assert all(isinstance(v, float) for v in result.values()), name
            assert all(math.isfinite(v) for v in result.values()), (key, name, result)
