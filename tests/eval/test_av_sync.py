"""eval.av_sync: onsets land on the ground-truth contacts, and a 200 ms shift is caught by every sync
score."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eval import MissingInput
from eval.av_sync import (
    audio_onsets,
    av_align,
    av_align_score,
    contact_times,
    match_events,
    onset_sync,
    peak_pick,
    sync,
    video_impacts,
)
from eval.broken import audio_shifted, audio_silenced, blank, frozen
from eval.clip import EvalClip


def test_peak_pick_matches_librosa_rules():
    x = np.zeros(60)
    x[[10, 12, 40]] = [1.0, 0.8, 0.5]
    # 12 is within pre_max of the larger 10; 40 stands alone
    assert peak_pick(x, pre_max=3, post_max=1, pre_avg=10, post_avg=11, delta=0.07, wait=3).tolist() == [
        10,
        40,
    ]


def test_onsets_of_clicks_are_found_to_the_frame():
    sr = 16000
    audio = np.zeros((1, 2 * sr), np.float32)
    rng = np.random.default_rng(0)
    for t in (0.3, 0.9, 1.5):
        i = int(t * sr)
        audio[0, i : i + 800] += 0.5 * np.exp(-np.arange(800) / 100) * rng.standard_normal(800)
    onsets = audio_onsets(audio, sr)
    assert len(onsets) == 3 and np.abs(onsets - [0.3, 0.9, 1.5]).max() < 1 / 24
    assert len(audio_onsets(1e-3 * rng.standard_normal((1, sr)).astype(np.float32), sr)) == 0  # hiss only


def test_matching_is_one_to_one():
    assert match_events(np.array([1.0, 1.01]), np.array([1.0]), 0.05) == [(0, 0)]
    # one-to-one, as the reference since Feb 2025 (before, one video peak matched both: IoU 2 / 1 = 2)
    assert av_align_score(np.array([1.0, 1.01]), np.array([1.0]), fps=24) == pytest.approx(0.5)
    assert av_align_score(np.array([1.0, 2.0]), np.array([1.02, 2.5]), fps=24) == pytest.approx(1 / 3)
    assert av_align_score(np.array([]), np.array([1.0]), fps=24) == 0.0


def test_contacts_closer_than_50_ms_are_one_event():
    meta = {"contacts": [{"time": t} for t in (0.5, 0.52, 0.56, 0.7)]}
    assert contact_times(meta).tolist() == [0.5, 0.56, 0.7]


def test_onset_sync_near_perfect_on_truth_after_mp4(world_mp4):
    results = {k: onset_sync(c) for k, c in world_mp4.items()}
    assert np.mean([r["onset_f1"] for r in results.values()]) >= 0.9
    assert min(r["onset_f1"] for r in results.values()) >= 0.8
    with_contacts = [r for k, r in results.items() if len(contact_times(world_mp4[k].meta))]
    assert max(abs(r["onset_offset_s"]) for r in with_contacts) < 0.02
    assert max(r["onset_abs_offset_s"] for r in with_contacts) < 0.02
    silent = results["static_0"]  # no contacts and no onsets is a perfect score; the lag is undefined
    assert (
        silent["onset_f1"] == 1.0 and silent["onset_abs_offset_s"] == 0.0 and "onset_offset_s" not in silent
    )


@pytest.mark.parametrize("shift", [0.2, -0.2])
def test_onset_sync_catches_a_200ms_shift(world, moving, shift):
    truth = [onset_sync(world[k]) for k in moving]
    shifted = [onset_sync(audio_shifted(world[k], shift)) for k in moving]
    assert np.mean([r["onset_f1"] for r in shifted]) < np.mean([r["onset_f1"] for r in truth]) - 0.5
    for r in shifted:
        assert r["onset_offset_s"] == pytest.approx(shift, abs=0.03)
        assert r["onset_abs_offset_s"] > 0.015 or r["onset_f1"] < 0.5


def test_av_align_drops_when_sound_is_shifted(world, world_mp4, moving):
    truth = [av_align(world_mp4[k])["av_align"] for k in moving]
    shifted = [av_align(audio_shifted(world[k]))["av_align"] for k in moving]
    assert np.mean(truth) > 0.25
    assert np.mean(shifted) < np.mean(truth) / 2.5
    assert sum(s < t for s, t in zip(shifted, truth, strict=True)) >= len(truth) - 1


def test_sync_metrics_need_sound(world):
    silent = dataclasses.replace(world["fall_0"], audio=None)
    for metric in (av_align, onset_sync, sync):
        with pytest.raises(MissingInput, match="audio"):
            metric(silent)


def _bouncing_ball(bounce: int = 10, frames: int = 24) -> np.ndarray:
    """A red disc falling 3 px a frame to frame ``bounce``, then rising 3 px a frame (72 px/s each way)."""
    video = np.full((frames, 64, 64, 3), 20, np.uint8)
    rows, cols = np.mgrid[:64, :64]
    for t in range(frames):
        y = 10 + 3 * (t if t <= bounce else 2 * bounce - t)
        video[t][(rows - y) ** 2 + (cols - 32) ** 2 <= 16] = (230, 40, 40)
    return video


def test_video_impacts_are_found_at_the_bounce():
    clip = EvalClip(_bouncing_ball(10), 24.0, prompt="A red ball bounces.")
    assert video_impacts(clip).tolist() == pytest.approx([10 / 24])
    still = EvalClip(np.repeat(_bouncing_ball()[:1], 24, axis=0), 24.0, prompt="A red ball.")
    assert len(video_impacts(still)) == 0


def _click_track(times: list[float], seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    audio = np.zeros((1, int(seconds * sr)), np.float32)
    rng = np.random.default_rng(0)
    for t in times:
        i = int(t * sr)
        audio[0, i : i + 800] += 0.5 * np.exp(-np.arange(800) / 100) * rng.standard_normal(800)
    return audio


def test_sync_compares_the_clip_with_itself():
    video = _bouncing_ball(10)
    on_time = sync(EvalClip(video, 24.0, audio=_click_track([10 / 24]), prompt="A red ball bounces."))
    assert on_time["sync_f1"] == 1.0 and on_time["sync_lag_s"] == pytest.approx(0.0, abs=0.015)
    late = sync(EvalClip(video, 24.0, audio=_click_track([10 / 24 + 0.2]), prompt="A red ball bounces."))
    assert late["sync_f1"] == 0.0 and late["sync_lag_s"] == pytest.approx(0.2, abs=0.015)
    silent = sync(EvalClip(video, 24.0, audio=np.zeros((1, 16000), np.float32), prompt="A red ball bounces."))
    assert silent["sync_f1"] == 0.0 and "sync_lag_s" not in silent
    nothing = sync(EvalClip(np.repeat(video[:1], 24, axis=0), 24.0, audio=np.zeros((1, 16000), np.float32)))
    assert "sync_f1" not in nothing  # nothing seen and nothing heard: no such content


def test_sync_high_on_truth_and_low_when_shifted_silenced_or_frozen(world, world_mp4, moving):
    truth = {k: sync(world_mp4[k])["sync_f1"] for k in moving}
    assert np.mean(list(truth.values())) >= 0.75 and min(truth.values()) >= 0.6
    for shift in (0.2, -0.2):
        shifted = [sync(audio_shifted(world[k], shift)) for k in moving]
        assert np.mean([r["sync_f1"] for r in shifted]) < np.mean(list(truth.values())) - 0.5
        assert all(r["sync_lag_s"] == pytest.approx(shift, abs=0.03) for r in shifted)
    for breaker in (audio_silenced, frozen, blank):
        assert all(sync(breaker(world[k]))["sync_f1"] == 0.0 for k in moving), breaker.__name__
    assert "sync_f1" not in sync(world_mp4["static_0"])
    # the onset agreement with the ground-truth timeline never looks at the video; sync does
    assert sync(frozen(world["fall_0"]))["sync_f1"] == 0.0 < onset_sync(frozen(world["fall_0"]))["onset_f1"]
