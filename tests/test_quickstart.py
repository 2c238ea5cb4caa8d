"""The quickstart end to end at a reduced size (slow: ~4 minutes on 2 cores): every artefact exists and
decodes, and a rerun skips every stage. The default run covers each stage's one-step smoke elsewhere
(world, VAE and DiT experiments, latents, export, sampling, suite tests)."""

import json

import pytest

from sora import media
from sora.config import compose


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    from sora.quickstart import run

    overrides = [
        f"out_dir={tmp_path}",
        "train_clips=16",
        "val_clips=8",
        "steps.vae_video=2",
        "steps.vae_audio=2",
        "steps.dit=2",
        "sample_scenes=1",
        "eval_scenes=1",
        "sample_steps=2",
        "train_logger=csv",
    ]
    summary = run(compose("quickstart", overrides))
    for path in [
        "world/preview.png",
        "vae_video/checkpoints/last.ckpt",
        "vae_video/train.log",
        "vae_video/config.yaml",
        "vae_audio/checkpoints/last.ckpt",
        "latents/DONE",
        "dit/checkpoints/last.ckpt",
        "dit/train.log",
        "export/config.json",
        "export/README.md",
        "samples/samples.json",
        "results.json",
        "report.html",
        "quickstart.json",
        "quickstart_config.yaml",
    ]:
        assert (tmp_path / path).exists(), path
    samples = json.loads((tmp_path / "samples" / "samples.json").read_text())["clips"]
    assert {c["mode"] for c in samples} == {"t2av", "i2v", "extend", "v2a"}
    for clip in samples:
        decoded = media.read_media(clip["path"])
        assert decoded.video.shape == (17, 64, 64, 3) and decoded.audio is not None
    report = (tmp_path / "report.html").read_text()
    assert "<video" in report and summary["summary"]
    for name in ("ground_truth", "baseline/t2av", "generated/t2av"):
        assert name in summary["summary"], name
    # The suite's held-out scenes come from the quickstart's world slice, in its families only.
    results = json.loads((tmp_path / "results.json").read_text())
    world = compose("quickstart").world
    assert results["config"]["suite"]["world"]["max_objects"] == world.max_objects
    assert results["config"]["suite"]["families"] == list(world.families)
    assert {s["family"] for s in results["scenes"]} <= set(world.families)

    again = run(compose("quickstart", overrides))  # everything exists: every stage is skipped
    assert all(seconds == 0.0 for seconds in again["timings_s"].values())
