"""The suite runner: ground truth beats its broken copies on the summary numbers (beyond their intervals),
every number carries n and a bootstrap interval (per family too) and a paired win rate, a tiny random model's
clips are written (watermarked, decodable) and shown in the report, failing metrics are recorded not fatal, a
generation that crashes fails the run unless allow_missing=true, and results.json carries the resolved config
and the model hash."""

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
from eval.suite import IncompleteRunError, crop_meta, run
from eval.summary import HEADLINE, SUMMARY, separated
from sora import media
from sora.config import compose

FAST_METRICS = "[physics_gt,physics_laws,spatial,objects,persistence,onset_sync]"
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
    assert gt["gravity_fit_rate"] == 1.0 and gt["persistence"] == 1.0 and gt["detection_rate"] == 1.0
    assert gt["onset_f1"] > 0.6 and gt["pos_err_px"] < 1.0
    # each defect is worse than the truth beyond both 95 % intervals on the number it targets
    assert separated(summary["broken/mirrored"], gt, "pos_err_px")
    assert separated(summary["broken/gravity_reversed"], gt, "pos_err_px")
    assert summary["broken/teleported"]["persistence"] < gt["persistence"] - 0.05
    assert summary["broken/audio_shifted"]["onset_f1"] < gt["onset_f1"] - 0.3
    for row in summary.values():  # no defect scores better than the truth on any quoted rate
        for key in ("gravity_fit_rate", "persistence", "onset_f1", "detection_rate"):
            assert row[key] is None or row[key] <= gt[key] + 1e-9
    # FTD: every defect that moves objects is farther from the truth than the truth's own round trip
    assert summary["broken/gravity_reversed"]["ftd"] > summary["broken/audio_shifted"]["ftd"]


def test_every_number_has_n_and_an_interval(ground_truth_run):
    out, results = ground_truth_run
    assert results["headline"] == list(HEADLINE)
    for group, row in results["summary"].items():
        for name in SUMMARY:
            n, lo, hi, mean = row[f"{name}_n"], row[f"{name}_lo"], row[f"{name}_hi"], row[name]
            assert n + row[f"{name}_undefined"] == row["clips"] == 2, (group, name)
            assert (mean is None) == (n == 0) and (lo is None) == (n == 0)
            if n:
                assert lo <= mean <= hi
    gt, mirrored = results["summary"]["ground_truth"], results["summary"]["broken/mirrored"]
    assert gt["pos_err_px_n"] == 2 and gt["pos_err_px_lo"] < gt["pos_err_px_hi"]  # two scenes that differ
    # per family: one scene each, so the interval collapses to the value and n says why
    fall = results["families"]["ground_truth"]["fall"]
    assert fall["clips"] == 1 and fall["pos_err_px_n"] == 1 and fall["pos_err_px_lo"] == fall["pos_err_px"]
    assert set(results["families"]["broken/mirrored"]) == {"fall", "collide"}
    # paired by scene: mirrored loses to the truth on position error in both scenes
    duel = results["paired"]["broken/mirrored"]["ground_truth"]["pos_err_px"]
    assert (
        duel["n"] == 2
        and duel["win_rate"] == 0.0
        and duel["diff"] == pytest.approx(mirrored["pos_err_px"] - gt["pos_err_px"])
    )
    assert "ground_truth" not in results["paired"]
    page = (out / "report.html").read_text()
    lo, hi = (f"{gt[k]:.3g}" for k in ("pos_err_px_lo", "pos_err_px_hi"))
    assert f"[{lo}, {hi}] n=2" in page and "Paired comparison" in page and "Per family" in page


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
    # the conditioning frames are known to the metrics (i2v: the first frame, extend: the context)
    given = {c["group"]: c["given_frames"] for c in generated}
    assert given == {"generated/t2av": 0, "generated/i2v": 1, "generated/extend": 5, "generated/v2a": 0}
    # a defect that cannot apply is skipped with its reason, not fatal
    assert [s["group"] for s in saved["skipped"]] == ["broken/interpenetrating"]
    page = (tmp_path / "report.html").read_text()
    assert "two objects" in saved["skipped"][0]["reason"] and "two objects" in page
    assert saved["summary"]["broken/interpenetrating"]["clips_failed"] == 1


def test_generation_crash_fails_the_run_unless_allowed(checkpoint, tmp_path, monkeypatch):
    """Two seeds per scene; the second seed's generation crashes: the run writes its results, then raises
    (the CLI exits 1); with allow_missing=true it returns, and the crash is counted either way."""
    from sora.pipeline import AVPipeline

    real = AVPipeline.generate
    seeds = []

    def flaky(self, req):
        seeds.append(req.seed)
        if len(seeds) == 2:
            raise RuntimeError("out of memory")
        return real(self, req)

    monkeypatch.setattr(AVPipeline, "generate", flaky)
    extra = ["suite.seeds_per_scene=2", "suite.metrics=[persistence]", "suite.broken=[]"]
    with pytest.raises(IncompleteRunError, match="1 clip.*out of memory.*allow_missing=true"):
        run(_model_run(checkpoint, tmp_path / "strict", ["t2av"], extra))
    assert seeds == [10000, 10000 + 1_000_003]  # one generator seed per sample of the scene
    saved = json.loads((tmp_path / "strict" / "results.json").read_text())
    assert saved["incomplete"] == 1 and saved["summary"]["generated/t2av"]["clips_failed"] == 1
    assert [s["id"] for s in saved["skipped"]] == ["scene000/generated/t2av/s1"]
    seeds.clear()
    results = run(_model_run(checkpoint, tmp_path / "lenient", ["t2av"], [*extra, "allow_missing=true"]))
    row = results["summary"]["generated/t2av"]
    assert row["clips"] == 1 and row["clips_failed"] == 1 and results["incomplete"] == 1


def test_seeds_per_scene_resample_scenes(checkpoint, tmp_path):
    extra = ["suite.seeds_per_scene=2", "suite.metrics=[temporal]", "suite.broken=[]"]
    results = run(_model_run(checkpoint, tmp_path, ["t2av"], extra))
    clips = [c for c in results["clips"] if c["group"] == "generated/t2av"]
    assert [c["sample"] for c in clips] == [0, 1] and clips[1]["id"] == "scene000/generated/t2av/s1"
    g = results["groups"]["generated/t2av"]
    key = "temporal_flickering"
    values = [c["metrics"][key] for c in clips]
    assert values[0] != values[1] and g["mean"][key] == pytest.approx(np.mean(values))
    # two clips of one scene: n counts both, but one scene leaves nothing to resample
    assert g["count"][key] == 2 and g["lo"][key] == g["hi"][key] == g["mean"][key]


def test_baseline_scenes_limit_the_baseline_to_the_first_scenes(checkpoint, tmp_path):
    extra = [
        f"baseline_checkpoint={checkpoint}",
        "suite.num_scenes=3",
        "suite.baseline_scenes=2",
        "suite.metrics=[temporal]",
        "suite.broken=[]",
        "suite.vae_round_trip=false",
    ]
    saved = run(_model_run(checkpoint, tmp_path, ["t2av"], extra))
    scenes = lambda group: [c["scene_id"] for c in saved["clips"] if c["group"] == group]  # noqa: E731
    assert scenes("generated/t2av") == scenes("ground_truth") == ["scene000", "scene001", "scene002"]
    assert scenes("baseline/t2av") == ["scene000", "scene001"]
    assert saved["groups"]["baseline/t2av"]["count"]["temporal_flickering"] == 2
    assert all(c["seconds"] > 0 for c in saved["clips"])  # each clip's making and scoring, timed
    with pytest.raises(ValueError, match="baseline_scenes"):
        run(_model_run(checkpoint, tmp_path / "bad", ["t2av"], ["suite.baseline_scenes=0"]))


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
    # the same model and seed in two roles: the same clip, pixel for pixel, and the same scores
    clips = {c["group"]: c for c in saved["clips"]}
    a, b = clips["generated/t2av"], clips["baseline/t2av"]
    video_a, video_b = (media.read_media(tmp_path / c["video"]) for c in (a, b))
    assert np.array_equal(video_a.video, video_b.video) and np.array_equal(video_a.audio, video_b.audio)
    assert a["metrics"] == b["metrics"] and a["metrics"]
    # paired against the baseline scene by scene: identical clips tie on every number
    duel = saved["paired"]["generated/t2av"]["baseline/t2av"]
    assert all(c["win_rate"] == 0.5 for c in duel.values() if c["n"]) and duel["persistence"]["n"] == 1


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
    gt = results["summary"]["ground_truth"]
    assert gt["clips"] == 1 and gt["left_right_accuracy_n"] + gt["left_right_accuracy_undefined"] == 1
    assert "95% intervals" in proc.stdout and "n=1" in proc.stdout


def test_vae_round_trip_group_scores_the_scene_through_the_models_vaes(checkpoint, tmp_path, monkeypatch):
    """``vae_round_trip``: each scene through ``AVPipeline.round_trip`` (here replaced by a mirror, so that
    the wiring shows in the scores), scored like the ground truth; off, the group is absent."""
    from sora.pipeline import AVPipeline

    calls = []

    def mirror(self, video, audio, sample_rate):
        calls.append(video.shape)
        return np.ascontiguousarray(video[:, :, ::-1]), audio

    monkeypatch.setattr(AVPipeline, "round_trip", mirror)
    extra = ["suite.metrics=[spatial,objects]", "suite.broken=[]", "suite.vae_round_trip=true"]
    summary = run(_model_run(checkpoint, tmp_path, ["t2av"], extra))["summary"]
    assert calls == [(9, 32, 32, 3)]
    assert summary["ground_truth"]["left_right_accuracy"] == 1.0
    assert summary["vae_round_trip"]["left_right_accuracy"] == 0.0
    assert summary["vae_round_trip"]["detection_rate"] == 1.0
    off = run(_model_run(checkpoint, tmp_path / "off", ["t2av"], [*extra[:2], "suite.vae_round_trip=false"]))
    assert "vae_round_trip" not in off["summary"] and len(calls) == 1


def test_pipeline_round_trip_is_encode_then_decode(checkpoint):
    import torch

    from sora.pipeline import AVPipeline

    pipe = AVPipeline.load(checkpoint)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    audio = rng.uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)  # stereo at 8 kHz: mixed and resampled
    got_v, got_a = pipe.round_trip(video, audio, 8000)
    mono = media.to_mono(media.resample_audio(audio, 8000, 16000))
    with torch.no_grad():
        zv, za = pipe.encode_video(media.video_to_tensor(video)), pipe.encode_audio(mono, 6000)  # 9 / 24 s
        want_v, want_a = pipe.decode(zv, za, 6000)
    assert np.array_equal(got_v, want_v) and got_a.shape == (1, 6000)
    torch.testing.assert_close(torch.from_numpy(got_a), torch.from_numpy(want_a))
    assert pipe.round_trip(video, None, 8000)[1] is None
