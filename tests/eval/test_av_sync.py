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
)
from eval.broken import audio_shifted


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
    # the reference AV-Align lets one video peak match two audio peaks (IoU 2 / (2 + 1 - 2) = 2); we do not
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
    for metric in (av_align, onset_sync):
        with pytest.raises(MissingInput, match="audio"):
            metric(silent)
