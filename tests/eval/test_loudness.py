"""eval.loudness: RMS levels in dBFS on known signals, and quiet or silenced sound against ground truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eval import MissingInput
from eval.broken import audio_silenced
from eval.loudness import SILENCE_DB, loudness, rms_dbfs


def test_rms_levels_of_known_signals():
    t = np.arange(16000) / 16000
    assert rms_dbfs(np.sign(np.sin(2 * np.pi * 100 * t + 0.1))) == pytest.approx(0.0, abs=1e-9)  # square
    assert rms_dbfs(0.5 * np.sin(2 * np.pi * 100 * t)) == pytest.approx(
        20 * np.log10(0.5 / np.sqrt(2)), abs=1e-3
    )
    assert rms_dbfs(np.zeros(100)) == SILENCE_DB == -100.0
    with pytest.raises(ValueError, match="at least one audio sample"):
        rms_dbfs(np.zeros(0))


def test_loudness_against_the_reference(world_mp4, world):
    for key, clip in world_mp4.items():
        level = loudness(clip)["loudness_db"]
        if key != "static_0":  # a still scene is silent
            assert -45.0 < level < -10.0, key
        with_ref = loudness(dataclasses.replace(clip, reference=world[key]))
        assert abs(with_ref["loudness_diff_db"]) < 0.5, key  # the mp4 round trip keeps the level
        quiet = dataclasses.replace(world[key], audio=world[key].audio / 4, reference=world[key])
        if key != "static_0":
            assert loudness(quiet)["loudness_diff_db"] == pytest.approx(-20 * np.log10(4), abs=1e-3)
    silenced = loudness(dataclasses.replace(audio_silenced(world["fall_0"]), reference=world["fall_0"]))
    assert silenced["loudness_db"] == SILENCE_DB and silenced["loudness_diff_db"] < -50
    assert "loudness_diff_db" not in loudness(world["fall_0"])  # no reference: no difference
    with pytest.raises(MissingInput, match="audio"):
        loudness(dataclasses.replace(world["fall_0"], audio=None))
