"""The quickstart end to end at a reduced size (slow: ~4 minutes on 2 cores): every artefact exists and
decodes, and a rerun skips every stage. The default run covers each stage's one-step smoke elsewhere
(world, VAE and DiT experiments, latents, export, sampling, suite tests)."""

import json

import pytest

from sora import media
from sora.config import compose

# The quickstart at a reduced size: every stage runs, in seconds each.
TINY = [
    "train_clips=16",
    "val_clips=8",
    "steps.vae_video=2",
    "steps.vae_audio=2",
    "steps.dit=2",
    "text_pretrain.steps=2",
    "sample_scenes=1",
    "eval_scenes=1",
    "sample_steps=2",
    "train_logger=csv",
    "budget_min=null",  # the fixed steps above (tests/test_quickstart_budget.py covers the budget)
]


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    from sora.quickstart import run

    overrides = [
        f"out_dir={tmp_path}",
        *TINY,
        "latents_mirror=true",  # the DiT (and the text stage) on mirrored twins too
    ]
    summary = run(compose("quickstart", overrides))
    report = json.loads((tmp_path / "latents" / "latents_report.json").read_text())
    assert report["mirrored"] and report["samples_written"] == 2 * 16
    for path in [
        "world/preview.png",
        "vae_video/checkpoints/last.ckpt",
        "vae_video/train.log",
        "vae_video/config.yaml",
        "vae_audio/checkpoints/last.ckpt",
        "latents/DONE",
        "dit/checkpoints/last.ckpt",
        "dit/text_encoder.pt",
        "dit/train.log",
        "export/config.json",
        "export/README.md",
        "samples/samples.json",
        "results.json",
        "report.html",
        "quickstart.json",
        "quickstart_config.yaml",
        "vae_video/DONE",
        "dit/DONE",
    ]:
        assert (tmp_path / path).exists(), path
    log = (tmp_path / "quickstart.log").read_text()  # every stage's start and end, and training progress
    for stage in ("world", "vae_video", "vae_audio", "latents", "dit", "export", "samples", "eval"):
        assert f"stage {stage} done in" in log, stage
    assert "AVDiTModule: step 2/2 (100%)" in log
    samples = json.loads((tmp_path / "samples" / "samples.json").read_text())["clips"]
    assert {c["mode"] for c in samples} == {"t2av", "i2v", "extend", "v2a"}
    for clip in samples:
        decoded = media.read_media(clip["path"])
        frames = compose("quickstart").num_frames  # the DiT generates the window it trained on
        assert decoded.video.shape[1:] == (64, 64, 3) and decoded.audio is not None
        if clip["mode"] == "extend":  # the source, then the extension
            assert decoded.video.shape[0] > frames
        else:
            assert decoded.video.shape[0] == frames
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


_FROM_ELSEWHERE = """
import json, sys
from sora.config import compose
from sora.quickstart import run
try:
    import train  # noqa: F401
    sys.exit("the repository root is on sys.path: this run would not show what an installed package does")
except ImportError:
    pass
overrides = [f"out_dir={sys.argv[1]}", "steps.vae_audio=1", "train_logger=csv", "num_workers=0"]
overrides.append("budget_min=null")
summary = run(compose("quickstart", overrides))
print(json.dumps(summary["timings_s"]))
"""


@pytest.mark.slow  # ~35 s of CPU: one audio-VAE step with its validation, in a fresh interpreter
def test_quickstart_runs_from_another_directory_without_the_repository_on_the_path(world_shards, tmp_path):
    """The installed package alone (no ``train.py`` importable) composes the quickstart and runs a training
    stage, from a directory that is not the repository root. Every other stage is marked done beforehand."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    site = tmp_path / "site"  # only the packages, as `pip install` puts them
    site.mkdir()
    for package in ("sora", "data_pipelines", "eval", "recaption"):
        (site / package).symlink_to(repo / package)
    out = tmp_path / "out"
    shutil.copytree(world_shards, out / "world")
    (out / "world_val").mkdir()
    shutil.copy(world_shards / "shard-000001.tar", out / "world_val")  # 4 held-out clips
    done = [
        "world/DONE",
        "vae_video/DONE",
        "latents/DONE",
        "dit/DONE",
        "export/config.json",
        "samples/samples.json",
    ]
    for path in done:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text("done")
    (out / "results.json").write_text(json.dumps({"summary": {}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-c", _FROM_ELSEWHERE, str(out)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    timings = json.loads(proc.stdout.strip().splitlines()[-1])
    assert timings["vae_audio"] > 0 and all(timings[k] == 0.0 for k in timings if k != "vae_audio"), timings
    assert (out / "vae_audio" / "checkpoints" / "last.ckpt").is_file() and (out / "quickstart.json").is_file()


def test_dit_stage_trains_and_generates_the_quickstart_window_on_mixed_captions(tmp_path):
    from sora.quickstart import eval_config, latents_options, stage_config

    cfg = compose("quickstart", [f"out_dir={tmp_path}", "num_frames=13"])
    names = ("world", "world_val", "vae_video", "vae_audio", "latents", "dit")
    paths = {name: tmp_path / name for name in names}
    dit = stage_config(cfg, "dit", paths, None)
    assert dit.module.sampling.num_frames == 13  # the DiT generates the window it trained on
    assert dict(dit.data.caption_keys) == {"txt": 0.5, "short": 0.5}
    assert dit.module.text_align.weight > 0 and cfg.text_pretrain.steps > 0  # dense captions need both
    # the image warm-up in the conditions that bind left/right: single-object clips (~half of a batch twice
    # the video steps'), every caption, the LR held through it
    assert dit.module.image_first_max_objects == 1 and dit.module.image_first_caption_dropout == 0
    assert dit.module.optim.hold_steps == dit.module.image_first_steps > 0
    assert dit.data.batch_size == 2 * dit.module.video_batch_size
    assert dit.data.resampled  # no epoch restarts every 16 batches (their worker forks cost ~0.25 s a step)
    assert latents_options(cfg)["mirror"] is False and latents_options(cfg)["buckets"] == {"64px": [13]}
    mirrored = compose("quickstart", [f"out_dir={tmp_path}", "latents_mirror=true"])
    assert latents_options(mirrored)["mirror"] is True
    dense_cfg = compose("quickstart", [f"out_dir={tmp_path}", "caption_keys=null"])
    dense = stage_config(dense_cfg, "dit", paths, None)
    assert dense.data.caption_keys is None

    suite = eval_config(cfg, tmp_path / "export", tmp_path / "eval").suite
    assert suite.num_scenes == cfg.eval_scenes and list(suite.modes) == ["t2av"]
    assert list(suite.families) == list(cfg.world.families)  # held-out scenes from the training slice


def test_device_auto_takes_a_gpu_for_training_latents_samples_and_eval(tmp_path, monkeypatch):
    import torch

    import sora.pipeline
    from sora.quickstart import _samples, eval_config, quickstart_device, stage_config

    names = ("world", "world_val", "vae_video", "vae_audio", "latents", "dit")
    paths = {name: tmp_path / name for name in names}
    cfg = compose("quickstart", [f"out_dir={tmp_path}", "sample_scenes=1", "sample_modes=[t2av]"])
    assert cfg.device == "auto"
    sampled = []
    monkeypatch.setattr(sora.pipeline, "sample_from_config", sampled.append)
    for gpu, want in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        assert quickstart_device(cfg) == want
        for stage in ("vae_video", "vae_audio", "dit"):
            trainer = stage_config(cfg, stage, paths, None).trainer
            assert trainer.accelerator == ("gpu" if gpu else "cpu"), stage
            assert (trainer.precision == "bf16-mixed") == gpu, stage
        assert eval_config(cfg, tmp_path / "export", tmp_path / "eval").device == want
        _samples(cfg, tmp_path / "export", paths["world_val"], tmp_path)
        assert sampled[-1].device == want
    # an explicit device wins over what is there; a GPU asked for and missing, or a typo, is an error
    cpu = compose("quickstart", [f"out_dir={tmp_path}", "device=cpu"])
    assert quickstart_device(cpu) == "cpu"
    assert stage_config(cpu, "dit", paths, None).trainer.accelerator == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        quickstart_device(compose("quickstart", ["device=cuda"]))
    with pytest.raises(ValueError, match="device must be one of"):
        quickstart_device(compose("quickstart", ["device=gpu0"]))


@pytest.mark.gpu
def test_quickstart_end_to_end_on_cuda(tmp_path):
    """The quickstart at a reduced size on a GPU (device=auto takes it): every stage trains, encodes,
    samples and evaluates there, and the suite scores what it made."""
    from sora.quickstart import run

    summary = run(compose("quickstart", [f"out_dir={tmp_path}", *TINY]))
    log = (tmp_path / "quickstart.log").read_text()
    assert "device: cuda" in log
    for stage in ("vae_video", "vae_audio", "dit"):  # each stage's saved config: one GPU, bf16 mixed
        saved = (tmp_path / stage / "config.yaml").read_text()
        assert "accelerator: gpu" in saved and "precision: bf16-mixed" in saved, stage
    assert summary["summary"]["generated/t2av"]
