"""Any model's clips: ``prompts_out=DIR`` writes what to generate (with conditioning files and ground truth),
``clips=DIR`` scores ``DIR/<id>.mp4`` like the suite's own clips, and a missing or malformed clip fails the
run unless ``allow_missing=true``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from eval.prompts import read_prompts
from eval.suite import IncompleteRunError, run
from sora import media
from sora.config import compose

SCENES = ["suite.num_scenes=2", "suite.families=[fall,collide]", "suite.num_frames=9"]
METRICS = ["suite.metrics=[physics_gt,objects,persistence,onset_sync]", "suite.broken=[mirrored]"]


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prompts")
    cfg = compose("eval", [f"prompts_out={out}", *SCENES, "suite.modes=[t2av,i2v,extend,v2a,a2v,remix]"])
    assert Path(run(cfg)["prompts"]) == out / "prompts.jsonl"
    return out


def test_prompts_out_writes_every_line_and_its_inputs(prompts_dir):
    spec, rows = read_prompts(prompts_dir)
    assert len(rows) == 12 and spec["format"]["num_frames"] == 9
    assert {r["mode"] for r in rows} == {"t2av", "i2v", "extend", "v2a", "a2v", "remix"}
    by_id = {r["id"]: r for r in rows}
    t2av, i2v = by_id["scene000_t2av"], by_id["scene001_i2v"]
    assert t2av["prompt"] and t2av["seconds"] == pytest.approx(9 / t2av["fps"])
    assert (t2av["width"], t2av["height"], t2av["num_frames"], t2av["seed"]) == (64, 64, 9, 10000)
    assert "image" not in t2av and "video" not in t2av and "audio" not in t2av
    # conditioning files beside the prompts, named relative to DIR
    first = media.read_media(prompts_dir / "ground_truth" / "scene001_i2v.mp4")
    assert first.video.shape == (9, 64, 64, 3) and first.audio is not None
    from PIL import Image

    image = np.asarray(Image.open(prompts_dir / i2v["image"]))
    assert i2v["given_frames"] == 1 and np.abs(image.astype(int) - first.video[0]).mean() < 3
    extend = by_id["scene000_extend"]
    context = media.read_media(prompts_dir / extend["video"])
    assert extend["given_frames"] == context.video.shape[0] == 5 and context.audio is not None
    assert media.read_media(prompts_dir / by_id["scene000_v2a"]["video"]).audio is None  # sound is the task
    assert media.read_media(prompts_dir / by_id["scene000_remix"]["video"]).audio is not None
    with wave.open(str(prompts_dir / by_id["scene000_a2v"]["audio"])) as w:
        assert w.getframerate() == spec["format"]["sample_rate"] and w.getnframes() > 0
    assert all((prompts_dir / "ground_truth" / f"{r['id']}.mp4").is_file() for r in rows)


def _clips_from(prompts_dir: Path, folder: Path, rows: list[dict]) -> None:
    """A 'model' that returns the ground truth for every line (the perfect generator)."""
    folder.mkdir()
    for name in ("prompts.jsonl", "suite.json"):
        shutil.copy(prompts_dir / name, folder / name)
    for r in rows:
        shutil.copy(prompts_dir / "ground_truth" / f"{r['id']}.mp4", folder / f"{r['id']}.mp4")


def _score(folder: Path, out: Path, *extra: str) -> dict:
    return run(compose("eval", [f"clips={folder}", f"out_dir={out}", *METRICS, *extra]))


def test_clips_dir_scores_the_ground_truth_like_the_ground_truth(prompts_dir, tmp_path):
    spec, rows = read_prompts(prompts_dir)
    folder = tmp_path / "model"
    _clips_from(prompts_dir, folder, rows)
    # the scoring run's own suite overrides do not change the scenes: suite.json defines them
    results = _score(folder, tmp_path / "out", "suite.num_scenes=7", "suite.families=[static]")
    assert results["clips_dir"] == str(folder) and results["num_scenes"] == 2
    summary = results["summary"]
    assert {f"generated/{m}" for m in ("t2av", "i2v", "extend", "v2a", "a2v", "remix")} <= set(summary)
    gt = summary["ground_truth"]
    for mode in ("t2av", "v2a", "a2v", "remix"):  # nothing given: judged on every frame, like the truth
        row = summary[f"generated/{mode}"]
        assert row["clips"] == 2 and row["clips_failed"] == 0
        for name in ("pos_err_px", "persistence", "detection_rate", "onset_f1"):
            assert row[name] == pytest.approx(gt[name], abs=1e-6), (mode, name)
            assert row[f"{name}_n"] == gt[f"{name}_n"]
    # i2v/extend: the truth again, judged on the frames after the conditioning ones
    for mode in ("i2v", "extend"):
        row = summary[f"generated/{mode}"]
        assert row["pos_err_px"] == pytest.approx(gt["pos_err_px"], abs=0.1) and row["persistence"] == 1.0
    assert summary["broken/mirrored"]["pos_err_px"] > gt["pos_err_px"] + 5
    clips = {c["id"]: c for c in results["clips"]}
    assert clips["scene000/generated/i2v"]["given_frames"] == 1
    assert clips["scene000/generated/extend"]["given_frames"] == 5
    paired = results["paired"]["generated/t2av"]["ground_truth"]["pos_err_px"]
    assert paired["n"] == 2 and paired["win_rate"] == 0.5  # ties with the truth in both scenes
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'src="clips/scene001_generated_a2v.mp4"' in page and (tmp_path / "out" / "clips").is_dir()


def test_missing_or_malformed_clips_fail_the_run_unless_allowed(prompts_dir, tmp_path):
    spec, rows = read_prompts(prompts_dir)
    rows = [r for r in rows if r["mode"] == "t2av"]
    folder = tmp_path / "model"
    _clips_from(prompts_dir, folder, rows)
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "scene001_t2av.mp4").unlink()
    with pytest.raises(IncompleteRunError, match="1 clip.*missing clip .*scene001_t2av.mp4"):
        _score(folder, tmp_path / "strict")
    saved = json.loads((tmp_path / "strict" / "results.json").read_text())  # written before raising
    assert saved["incomplete"] == 1 and saved["summary"]["generated/t2av"]["clips"] == 1
    # a clip of the wrong size is no better than a missing one
    small = np.zeros((9, 32, 32, 3), np.uint8)
    media.write_mp4(folder / "scene001_t2av.mp4", small, spec["format"]["fps"])
    results = _score(folder, tmp_path / "lenient", "allow_missing=true")
    assert results["incomplete"] == 1
    assert "32x32 frames, the prompt asks for 64x64" in results["skipped"][0]["reason"]
    assert results["summary"]["generated/t2av"]["clips_failed"] == 1


def test_clips_dir_rejects_a_folder_without_prompts(tmp_path):
    with pytest.raises(ValueError, match="prompts_out=DIR"):
        run(compose("eval", [f"clips={tmp_path}", f"out_dir={tmp_path / 'out'}"]))
    with pytest.raises(ValueError, match="give checkpoint=PATH"):
        run(compose("eval", [f"out_dir={tmp_path / 'out'}"]))
    with pytest.raises(ValueError, match="give one of"):
        run(compose("eval", [f"clips={tmp_path}", f"prompts_out={tmp_path}"]))


def test_seeds_per_scene_give_one_line_per_seed(tmp_path):
    cfg = compose("eval", [f"prompts_out={tmp_path}", "suite.num_scenes=1", "suite.modes=[t2av]"])
    cfg.suite.seeds_per_scene = 3
    run(cfg)
    _, rows = read_prompts(tmp_path)
    assert [r["id"] for r in rows] == ["scene000_t2av", "scene000_t2av_s1", "scene000_t2av_s2"]
    assert [r["seed"] for r in rows] == [10000, 10000 + 1_000_003, 10000 + 2_000_006]
    assert all((tmp_path / "ground_truth" / f"{r['id']}.mp4").is_file() for r in rows)


def test_read_prompts_rejects_ids_that_are_paths(prompts_dir, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(prompts_dir / "suite.json", folder / "suite.json")
    (folder / "prompts.jsonl").write_text(json.dumps({"id": "../x", "mode": "t2av", "scene_id": "scene000"}))
    with pytest.raises(ValueError, match="not a plain file name"):
        read_prompts(folder)


@pytest.mark.slow
def test_cli_exits_non_zero_on_a_missing_clip(prompts_dir, tmp_path):
    _, rows = read_prompts(prompts_dir)
    folder = tmp_path / "model"
    _clips_from(prompts_dir, folder, [r for r in rows if r["id"] != "scene000_t2av"])
    args = [sys.executable, "-m", "eval.suite", f"clips={folder}", f"out_dir={tmp_path / 'out'}", *METRICS]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=root, timeout=600)
    assert proc.returncode == 1 and "incomplete run: 1 clip(s)" in proc.stderr
    proc = subprocess.run(
        [*args, "allow_missing=true"], capture_output=True, text=True, cwd=root, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
