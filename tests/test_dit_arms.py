"""benchmarks/dit_arms.py: an arm is the source run with only the DiT trained again, for the source's DiT
time; the comparison's paired differences on results whose differences are known."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sora.config import compose, save_resolved_config

ROOT = Path(__file__).parents[1]
_spec = importlib.util.spec_from_file_location("dit_arms", ROOT / "benchmarks" / "dit_arms.py")
arms = sys.modules["dit_arms"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arms)


def _results(path: Path, detection: list[float], pos: list[float], group: str = "generated/t2av") -> Path:
    clips = [
        {"group": group, "scene_id": f"scene{i:03d}", "metrics": {"detection_rate": d, "pos_err_px": p}}
        for i, (d, p) in enumerate(zip(detection, pos))
    ]
    clips.append({"group": "ground_truth", "scene_id": "scene000", "metrics": {"detection_rate": 1.0}})
    mean = {"detection_rate": sum(detection) / len(detection), "pos_err_px": sum(pos) / len(pos)}
    summary = {k: v for m, x in mean.items() for k, v in ((m, x), (f"{m}_lo", x - 0.1), (f"{m}_hi", x + 0.1))}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"clips": clips, "summary": {group: summary}}))
    return path


def test_compare_pairs_scenes_and_pools_the_pairs(tmp_path):
    base = [0.2, 0.5, 0.4, 0.9, 0.6, 0.3]
    pos = [40.0, 30.0, 50.0, 20.0, 35.0, 45.0]
    ctrl0 = _results(tmp_path / "ctrl0", base, pos)
    arm0 = _results(tmp_path / "arm0", [b + 0.1 for b in base], [p - 2.0 for p in pos])
    ctrl1 = _results(tmp_path / "ctrl1", base[::-1], pos)
    # scene005 is undefined in this arm: left out of its pair (n), not counted as 0
    arm1 = _results(tmp_path / "arm1", [b + 0.3 for b in base[::-1][:5]] + [math.nan], [p - 6.0 for p in pos])
    metrics = ("detection_rate", "pos_err_px")
    result = arms.compare([(arm0, ctrl0), (arm1, ctrl1)], metrics=metrics)
    first, second = (p["metrics"] for p in result["pairs"])
    assert first["detection_rate"]["diff"] == pytest.approx(0.1)
    assert first["detection_rate"]["win_rate"] == 1.0
    assert first["pos_err_px"]["win_rate"] == 1.0  # lower is better
    assert second["detection_rate"]["diff"] == pytest.approx(0.3) and second["detection_rate"]["n"] == 5
    pooled = result["pooled"]
    assert pooled["detection_rate"]["n"] == 11  # each pair's scenes are their own: 6 + 5, not 6
    assert pooled["detection_rate"]["diff"] == pytest.approx((6 * 0.1 + 5 * 0.3) / 11)
    assert 0.1 <= pooled["detection_rate"]["diff_lo"] < pooled["detection_rate"]["diff_hi"] <= 0.3
    assert pooled["pos_err_px"]["diff"] == pytest.approx(-4.0)
    assert result["runs"][str(arm0)]["detection_rate"] == pytest.approx(sum(base) / 6 + 0.1)
    table = arms.markdown(result)
    assert "| pooled (2 pairs) | +0.19 [" in table and "n=11" in table, table
    with pytest.raises(ValueError, match="no group 'generated/i2v'"):
        arms.compare([(arm0, ctrl0)], group="generated/i2v", metrics=metrics)


def test_compare_cli_reads_pairs_and_writes_json(tmp_path, capsys):
    ctrl = _results(tmp_path / "c", [0.5, 0.5], [10.0, 12.0])
    arm = _results(tmp_path / "a", [0.7, 0.5], [10.0, 12.0])
    out = tmp_path / "cmp.json"
    pair = f"{arm}={ctrl / 'results.json'}"
    arms.main(["compare", pair, "--metrics", "detection_rate", "--json", str(out)])
    assert json.loads(out.read_text())["pairs"][0]["metrics"]["detection_rate"]["diff"] == pytest.approx(0.1)
    assert "detection_rate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        arms.main(["compare", str(arm)])  # not ARM=CONTROL


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    cfg = compose("quickstart", [f"out_dir={src}", "seed=3", "dit_overrides=['module.image_prob=0.1']"])
    save_resolved_config(cfg, src, "quickstart_config.yaml")
    for name in ("world", "vae_video", "vae_audio", "latents"):
        (src / name).mkdir()
        (src / name / "DONE").write_text("ok")
    (src / "world_val").mkdir()
    (src / "dit").mkdir()
    (src / "dit" / "text_encoder.pt").write_bytes(b"weights")
    (src / "budget_plan.json").write_text(json.dumps({"stages": {"dit": {"minutes": 9.0, "steps": 700}}}))
    (src / "quickstart.json").write_text(json.dumps({"timings_s": {"dit": 690.0}}))
    return src


def test_an_arm_reuses_the_sources_stages_and_trains_its_dit_as_long(tmp_path):
    src, out = _source(tmp_path), tmp_path / "arm"
    cfg = arms.prepare_arm(src, out, ["module.flow.shift=3.0"])
    assert cfg.out_dir == str(out) and cfg.seed == 3  # the source's config, not the defaults
    assert list(cfg.dit_overrides) == ["module.image_prob=0.1", "module.flow.shift=3.0"]
    assert list(cfg.eval_overrides) == arms.ARM_EVAL
    for name in arms.LINKED:
        assert (out / name).is_symlink() and (out / name).resolve() == (src / name).resolve()
    assert (out / "dit" / "text_encoder.pt").read_bytes() == b"weights"
    plan = json.loads((out / "budget_plan.json").read_text())
    assert plan["stages"]["dit"]["minutes"] == pytest.approx(690.0 / 60 / 1.15)  # its cap = the source's time
    assert json.loads((out / "arm.json").read_text())["overrides"] == ["module.flow.shift=3.0"]
    again = arms.prepare_arm(src, out, [], full_eval=True)  # rerun in place: links kept, source's eval
    assert list(again.eval_overrides) == list(OmegaConf.load(src / "quickstart_config.yaml").eval_overrides)
    (tmp_path / "other").mkdir()
    (out / "latents").unlink()
    (out / "latents").symlink_to(tmp_path / "other")
    with pytest.raises(FileExistsError):
        arms.prepare_arm(src, out, [])
    (src / "latents" / "DONE").unlink()
    with pytest.raises(FileNotFoundError, match="latents"):
        arms.prepare_arm(src, tmp_path / "arm2", [])


@pytest.mark.slow  # a reduced quickstart, then its arm: ~2 min
def test_an_arm_trains_and_scores_on_a_reduced_quickstart(tmp_path):
    from sora.quickstart import run

    spec = importlib.util.spec_from_file_location("quickstart_tests", ROOT / "tests" / "test_quickstart.py")
    quickstart_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart_tests)
    TINY = quickstart_tests.TINY
    run(compose("quickstart", [f"out_dir={tmp_path / 'src'}", *TINY]))
    arms.main(["train", str(tmp_path / "src"), str(tmp_path / "arm"), "module.flow.shift=3.0"])
    saved = (tmp_path / "arm" / "dit" / "config.yaml").read_text()
    assert "shift: 3.0" in saved
    assert not (tmp_path / "arm" / "vae_video" / "checkpoints").is_symlink()  # the folder above is the link
    result = arms.compare([(tmp_path / "arm", tmp_path / "src")])
    assert result["pooled"]["detection_rate"]["n"] == 1
