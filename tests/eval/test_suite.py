"""The suite runner: ground truth beats its broken copies on the summary numbers, a tiny random model's clips
are written (watermarked, decodable) and shown in the report, failing metrics are recorded not fatal, and
results.json carries the resolved config and the model hash."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval import METRICS
from eval.suite import crop_meta, run
from sora import media
from sora.config import compose

FAST_METRICS = "[physics_laws,spatial,persistence,onset_sync]"
"""The metrics behind the summary numbers (the full list costs ~2x the time on 2 cores)."""


@pytest.fixture(scope="module")
def checkpoint(tiny_av_checkpoint):
    return tiny_av_checkpoint


@pytest.fixture(scope="module")
def ground_truth_run(tmp_path_factory):
    """``checkpoint=ground_truth`` over a fall and a collide scene (both have relations in their captions,
    free flight and contacts within the 17 default frames), with one defect per summary number."""
    out = tmp_path_factory.mktemp("gt")
    cfg = compose(
        "eval",
        [
            "checkpoint=ground_truth",
            f"out_dir={out}",
            "suite.num_scenes=2",
            "suite.families=[fall,collide]",
            f"suite.metrics={FAST_METRICS}",
            "suite.broken=[mirrored,gravity_reversed,teleported,audio_shifted]",
        ],
    )
    return out, run(cfg)


def test_ground_truth_run_writes_results_and_report(ground_truth_run):
    out, results = ground_truth_run
    assert (out / "results.json").is_file() and (out / "report.html").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == results["summary"]
    assert saved["checkpoint"] == "ground_truth" and saved["model_config_hash"] is None
    assert saved["config"]["suite"]["num_scenes"] == 2 and saved["format"]["num_frames"] == 17
    groups = ["ground_truth", "broken/mirrored", "broken/gravity_reversed", "broken/teleported"]
    assert set(groups) <= set(saved["summary"])
    assert all(row["clips"] == 2 and row["metric_errors"] == 0 for row in saved["summary"].values())
    page = (out / "report.html").read_text()
    for clip in saved["clips"]:  # every clip is on the page, and its files exist next to it
        assert f'src="{clip["video"]}"' in page and f'src="{clip["sheet"]}"' in page
        assert (out / clip["video"]).is_file() and (out / clip["sheet"]).is_file()
    assert 'src="plots/summary.png"' in page and (out / "plots" / "summary.png").is_file()
    assert "base64" not in page and 'class="best"' in page


def test_ground_truth_beats_broken_on_the_summary_numbers(ground_truth_run):
    summary = ground_truth_run[1]["summary"]
    gt = summary["ground_truth"]
    assert gt["spatial_accuracy"] > 0.75 and gt["gravity_fit_rate"] == 1.0 and gt["persistence"] == 1.0
    assert gt["onset_f1"] > 0.6
    assert summary["broken/mirrored"]["spatial_accuracy"] < gt["spatial_accuracy"] - 0.3
    assert summary["broken/mirrored"]["spatial_pass_rate"] < gt["spatial_pass_rate"] - 0.5
    assert summary["broken/gravity_reversed"]["gravity_fit_rate"] < gt["gravity_fit_rate"] - 0.5
    assert summary["broken/teleported"]["persistence"] < gt["persistence"] - 0.05
    assert summary["broken/audio_shifted"]["onset_f1"] < gt["onset_f1"] - 0.3
    for row in summary.values():  # no defect scores better than the truth on any quoted rate
        for key in ("spatial_accuracy", "spatial_pass_rate", "gravity_fit_rate", "persistence", "onset_f1"):
            assert row[key] is None or row[key] <= gt[key] + 1e-9
    # FTD: every defect that moves objects is farther from the truth than the truth's own round trip
    assert summary["broken/gravity_reversed"]["ftd"] > summary["broken/audio_shifted"]["ftd"]


def test_cropped_metadata_is_consistent():
    from data_pipelines.synthetic import WorldConfig, generate_clip

    meta = generate_clip(WorldConfig(), 10000, "fall").meta
    cropped = crop_meta(meta, 17)
    assert cropped["num_frames"] == 17 and math.isclose(cropped["duration"], 17 / 24)
    assert all(len(tr["x"]) == len(tr["bbox"]) == 17 for tr in cropped["tracks"])
    assert cropped["contacts"] and all(c["time"] < 17 / 24 and c["frame"] < 17 for c in cropped["contacts"])
    assert len(cropped["contacts"]) < len(meta["contacts"]) and len(meta["tracks"][0]["x"]) == 48
    with pytest.raises(ValueError, match="crop"):
        crop_meta(meta, 49)


def _model_run(checkpoint, out, modes, extra=()):
    return compose(
        "eval",
        [
            f"checkpoint={checkpoint}",
            f"out_dir={out}",
            "suite.num_scenes=1",
            "suite.families=[throw]",
            "suite.steps=2",
            f"suite.modes=[{','.join(modes)}]",
            "suite.broken=[mirrored,interpenetrating]",  # a one-object throw: interpenetrating is skipped
            "+suite.world.max_objects=1",
            "+suite.world.families=[throw]",
            *extra,
        ],
    )


def _check_generated(out, saved, groups, config_hash):
    page = (out / "report.html").read_text()
    generated = [c for c in saved["clips"] if c["group"].split("/")[0] in ("generated", "baseline")]
    assert sorted(c["group"] for c in generated) == sorted(groups)
    for clip in generated:
        decoded = media.read_media(out / clip["video"])
        assert decoded.video.shape == (9, 32, 32, 3) and decoded.audio is not None
        assert decoded.metadata["model_config_hash"] == config_hash  # save_clip's provenance
        assert decoded.metadata["ai_generated"] and decoded.metadata["mode"] == clip["mode"]
        assert f'src="{clip["video"]}"' in page and f'src="{clip["sheet"]}"' in page
        assert (out / clip["sheet"]).is_file()
    return generated


def test_random_checkpoint_run_writes_clips_and_report(checkpoint, tmp_path, monkeypatch):
    def boom(clip):
        raise RuntimeError("metric bug")

    monkeypatch.setitem(METRICS, "boom", boom)
    modes = ["t2av", "i2v", "extend", "v2a"]
    results = run(_model_run(checkpoint, tmp_path, modes, ["suite.metrics=[spatial,persistence,boom]"]))
    from sora.pipeline import AVPipeline

    config_hash = AVPipeline.load(checkpoint).config_hash
    saved = json.loads((tmp_path / "results.json").read_text())
    assert results["summary"] == saved["summary"]
    assert saved["model_config_hash"] == config_hash and saved["baseline_config_hash"] is None
    assert saved["config"]["checkpoint"] == str(checkpoint) and saved["config"]["suite"]["steps"] == 2
    assert saved["format"] == {"num_frames": 9, "fps": 24.0, "height": 32, "width": 32, "sample_rate": 16000}
    generated = _check_generated(tmp_path, saved, [f"generated/{m}" for m in modes], config_hash)
    # the metric that raises is recorded on every clip with its reason and counted; the others still ran
    assert all(
        c["failures"]["boom"] == {"kind": "error", "reason": "RuntimeError: metric bug"}
        for c in saved["clips"]
    )
    assert saved["failures"]["errors"] == len(saved["clips"])
    assert all(row["metric_errors"] == row["clips"] for row in saved["summary"].values())
    assert all("persistence" in c["metrics"] for c in saved["clips"])
    # reference metrics of conditioned modes ran against the ground truth
    i2v = next(c for c in generated if c["group"] == "generated/i2v")
    assert "psnr" in i2v["metrics"] and "spatial_iou" in i2v["metrics"]
    # a defect that cannot apply is skipped with its reason, not fatal
    assert [s["group"] for s in saved["skipped"]] == ["broken/interpenetrating"]
    page = (tmp_path / "report.html").read_text()
    assert "two objects" in saved["skipped"][0]["reason"] and "two objects" in page
    assert saved["summary"]["broken/interpenetrating"]["clips_failed"] == 1


@pytest.mark.slow
def test_baseline_and_other_modes(checkpoint, tmp_path):
    modes = ["t2av", "a2v", "remix"]
    extra = [f"baseline_checkpoint={checkpoint}", "suite.baseline_modes=[t2av]"]
    run(_model_run(checkpoint, tmp_path, modes, extra))
    saved = json.loads((tmp_path / "results.json").read_text())
    config_hash = saved["model_config_hash"]
    assert config_hash and saved["baseline_config_hash"] == config_hash
    assert saved["baseline_checkpoint"] == str(checkpoint)
    groups = [f"generated/{m}" for m in modes] + ["baseline/t2av"]
    _check_generated(tmp_path, saved, groups, config_hash)
    assert set(groups) <= set(saved["summary"]) and not saved["failures"]["errors"]
    # the same model and seed in two roles: the same clip, up to bf16 CPU matmuls rounding differently when
    # another test changed torch's thread count (a pixel or two moves by one grey level)
    clips = {c["group"]: c for c in saved["clips"]}
    a, b = clips["generated/t2av"]["metrics"], clips["baseline/t2av"]["metrics"]
    assert a.keys() == b.keys()
    assert a == {k: pytest.approx(v, rel=0.2, abs=2e-3, nan_ok=True) for k, v in b.items()}


def test_unknown_metric_is_a_clear_error(tmp_path):
    cfg = compose("eval", ["checkpoint=ground_truth", f"out_dir={tmp_path}", "suite.metrics=[nope]"])
    with pytest.raises(ValueError, match="unknown metric"):
        run(cfg)


@pytest.mark.slow
def test_cli_prints_where_the_report_is(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "eval.suite",
            "checkpoint=ground_truth",
            f"out_dir={out}",
            "suite.num_scenes=1",
            "suite.metrics=[spatial]",
            "suite.broken=[mirrored]",
            "suite.num_frames=9",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"report: .*report\.html", proc.stdout.replace("\n", ""))
    results = json.loads((out / "results.json").read_text())
    assert results["format"]["num_frames"] == 9 and (out / "config.yaml").is_file()
    assert np.isclose(results["summary"]["ground_truth"]["spatial_accuracy"], 1.0)
