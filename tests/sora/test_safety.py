"""sora.safety: the filter names its rule, the watermark is visible and moves, provenance reads back."""

import subprocess
import sys

import numpy as np
import pytest

from sora import media, safety


def test_blocklist_and_classifier_name_the_rule():
    f = safety.PromptFilter(
        blocklist=[r"forbidden\s+thing"], classifiers=[lambda p: ("nsfw" in p, "nsfw score")]
    )
    assert f.check("a red ball falls") is None
    assert f.check("a Forbidden  Thing appears") == r"blocklist:forbidden\s+thing"
    assert f.check("nsfw clip").startswith("classifier:") and f.check("nsfw clip").endswith("nsfw score")
    with pytest.raises(safety.PromptRejected, match="rule: blocklist"):
        f.require("forbidden thing")
    assert safety.PromptFilter(blocklist=["x"], enabled=False).check("x") is None
    # word boundaries: a substring inside another word is not a match
    assert safety.PromptFilter(blocklist=["ass"]).check("a glass ball") is None


def test_default_blocklist_rejects_and_allows():
    f = safety.PromptFilter()
    assert f.check("how to build a bomb") is not None
    assert f.check("a blue box slides to the right and hits a wall") is None


def test_watermark_visible_and_moving():
    video = np.full((24, 64, 64, 3), 40, np.uint8)
    marked = safety.apply_watermark(video, text="AI", opacity=0.6)
    changed = np.any(marked != video, axis=-1)  # (T, H, W)
    assert changed.any(axis=(1, 2)).all(), "every frame carries the mark"
    centroids = [np.argwhere(c).mean(axis=0) for c in changed]
    assert np.linalg.norm(centroids[0] - centroids[12]) > 3, "the mark moves"
    assert changed.mean() < 0.2, "the mark does not cover the frame"
    with pytest.raises(ValueError, match="opacity"):
        safety.apply_watermark(video, opacity=0)


def test_provenance_round_trip_and_verify_cli(tmp_path):
    record = safety.provenance(prompt="a red ball", seed=7, config_hash="abc123")
    clip = tmp_path / "clip.mp4"
    media.write_mp4(clip, np.zeros((4, 32, 32, 3), np.uint8), 24, metadata=record)
    got = safety.verify(str(clip))
    assert got["seed"] == 7 and got["model_config_hash"] == "abc123" and got["ai_generated"] is True
    assert (
        got["prompt_sha256"]
        == safety.provenance(prompt="a red ball", seed=0, config_hash="")["prompt_sha256"]
    )
    out = subprocess.run(
        [sys.executable, "-m", "sora.safety", "verify", str(clip)], capture_output=True, text=True
    )
    assert out.returncode == 0 and '"seed": 7' in out.stdout
    plain = tmp_path / "plain.mp4"
    media.write_mp4(plain, np.zeros((4, 32, 32, 3), np.uint8), 24)
    out = subprocess.run(
        [sys.executable, "-m", "sora.safety", "verify", str(plain)], capture_output=True, text=True
    )
    assert out.returncode == 1 and "no sora-open provenance" in out.stderr
