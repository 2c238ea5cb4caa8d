"""The quickstart's time budget: calibration records -> step times -> plan -> training configs, with a fake
timer; the plan is saved, reused on a rerun, printed and logged; budget_min=null keeps the fixed steps."""

import json
import logging
import math

import pytest

from sora.config import compose
from sora.quickstart_budget import (
    StageTiming,
    apply_stage_plan,
    check_budget,
    check_min_steps,
    dit_image_fraction,
    eval_seconds,
    make_plan,
    scaled_ema_decay,
    timing_from_steps,
)

STEPS = {"vae_video": 2600, "vae_audio": 600, "dit": 2800}
TIMINGS = {
    "vae_video": StageTiming(step_s=0.1, startup_s=5.0),
    "vae_audio": StageTiming(step_s=0.2, startup_s=5.0),
    "dit": StageTiming(step_s=0.25, startup_s=10.0),
}


def _plan(budget_min, **kwargs):
    args = dict(
        budget_min=budget_min,
        spent_s=60.0,
        fixed_expected_s={"latents": 10.0, "export": 1.0, "samples": 5.0, "eval": 104.0},
        margin=0.1,
        steps=STEPS,
        timings=TIMINGS,
    )
    return make_plan(**{**args, **kwargs})


def test_timing_from_steps_with_a_fake_timer():
    call = 100.0
    # A VAE: the first step ends 2.0 s after the call (1.5 s start-up + 0.5 s), then one every 0.5 s except
    # a stall of another process (median: not moved by it).
    ends = [102.0, 102.5, 103.0, 103.5, 106.0, 106.5, 107.0]
    timing = timing_from_steps(call, [(t, False) for t in ends])
    assert timing.step_s == pytest.approx(0.5) and timing.startup_s == pytest.approx(1.5)
    # The DiT: image steps every 0.1 s, then video steps every 0.3 s; the first video step (0.7 s: new
    # shapes) is not timed. A quarter of the run's steps are image steps.
    steps = [(101.0, True), (101.1, True), (101.2, True), (101.9, False), (102.2, False)]
    timing = timing_from_steps(call, steps, image_fraction=0.25)
    assert timing.detail["image_step_s"] == pytest.approx(0.1)
    assert timing.detail["video_step_s"] == pytest.approx(0.3)
    assert timing.step_s == pytest.approx(0.25 * 0.1 + 0.75 * 0.3)
    with pytest.raises(ValueError, match="image steps must all come before"):
        timing_from_steps(call, [(1.0, False), (2.0, True), (3.0, True), (4.0, False)], image_fraction=0.5)
    with pytest.raises(ValueError, match="need at least 2 timed steps"):
        timing_from_steps(call, [(1.0, True), (2.0, False), (3.0, False)], image_fraction=0.5)


def test_dit_image_fraction():
    assert dit_image_fraction(2800, 1000, 0.1) == pytest.approx(1000 / 2800 + (1800 / 2800) * 0.1)
    assert dit_image_fraction(500, 1000, 0.1) == 1.0  # the warm-up is longer than the run
    assert dit_image_fraction(100, 0, 0.0) == 0.0


def test_plan_fills_the_budget_and_scales_with_it():
    plan = _plan(20)
    reserved = 60.0 + 120.0 + 0.1 * 1200 + 20.0  # spent, fixed stages, margin, start-ups
    assert plan["train_s"] == pytest.approx(1200 - reserved)
    factor = plan["train_s"] / sum(STEPS[s] * TIMINGS[s].step_s for s in STEPS)
    for name, stage in plan["stages"].items():
        assert stage["steps"] == math.floor(factor * STEPS[name])  # the recipe's proportions are kept
        assert stage["minutes"] == pytest.approx(
            (stage["steps"] * TIMINGS[name].step_s + 5.0 * (1 + (name == "dit"))) / 60
        )
    used = sum(s["steps"] * TIMINGS[n].step_s for n, s in plan["stages"].items())
    assert plan["train_s"] - 1.0 < used <= plan["train_s"]
    bigger = _plan(40)  # 20 more minutes, all of it (less the margin) for training
    assert bigger["train_s"] - plan["train_s"] == pytest.approx(20 * 60 * 0.9)
    for name in STEPS:
        assert bigger["stages"][name]["steps"] > 1.8 * plan["stages"][name]["steps"]


def test_plan_with_shares_and_finished_stages():
    shares = {"vae_video": 0.5, "vae_audio": 0.25, "dit": 0.25}
    plan = _plan(20, shares=shares)
    for name, share in shares.items():
        assert plan["stages"][name]["steps"] == math.floor(plan["train_s"] * share / TIMINGS[name].step_s)
    # Finished stages have no calibration: they get no time; the others share it.
    rest = _plan(20, timings={"dit": TIMINGS["dit"]})
    assert list(rest["stages"]) == ["dit"]
    assert rest["stages"]["dit"]["steps"] == math.floor(rest["train_s"] / 0.25)


def test_a_stage_floor_raises_it_and_the_others_share_the_rest():
    free = _plan(20)
    vae = free["stages"]["vae_video"]["steps"]
    assert _plan(20, min_steps={"vae_video": vae})["stages"] == free["stages"]  # not below it: no change
    plan = _plan(20, min_steps={"vae_video": vae + 1000})
    stages = plan["stages"]
    assert stages["vae_video"]["steps"] == vae + 1000
    left = plan["train_s"] - (vae + 1000) * TIMINGS["vae_video"].step_s
    factor = left / (STEPS["vae_audio"] * 0.2 + STEPS["dit"] * 0.25)  # the others keep their proportions
    assert stages["vae_audio"]["steps"] == math.floor(factor * STEPS["vae_audio"])
    assert stages["dit"]["steps"] == math.floor(factor * STEPS["dit"])
    used = sum(s["steps"] * TIMINGS[n].step_s for n, s in stages.items())
    assert plan["train_s"] - 1.0 < used <= plan["train_s"]
    assert "vae_video" in plan["rule"] and plan["inputs"]["min_steps"] == {"vae_video": vae + 1000}
    # a floor out of reach takes half the training time, no more
    greedy = _plan(20, min_steps={"vae_video": 10**6})
    assert greedy["stages"]["vae_video"]["steps"] == math.floor(0.5 * plan["train_s"] / 0.1)
    # with shares the others share the rest in theirs
    shared = _plan(20, shares={"vae_video": 0.1, "vae_audio": 0.3, "dit": 0.6}, min_steps={"vae_video": 3000})
    left = shared["train_s"] - 3000 * 0.1
    assert shared["stages"]["dit"]["steps"] == math.floor(left * 0.6 / 0.9 / 0.25)
    assert "min_steps" not in free["inputs"]  # plans saved before the floor existed are still reused


def test_bad_budgets_are_refused():
    with pytest.raises(ValueError, match="leaves no time to train"):
        _plan(2)
    with pytest.raises(ValueError, match="budget_min must be a number of minutes > 0"):
        check_budget(0, None)
    with pytest.raises(ValueError, match="budget_min must be a number of minutes > 0"):
        check_budget("20", None)
    with pytest.raises(ValueError, match="needs exactly the training stages"):
        check_budget(20, {"dit": 1.0})
    with pytest.raises(ValueError, match="must be numbers > 0"):
        check_budget(20, {"vae_video": 1, "vae_audio": 0, "dit": 1})
    check_budget(None, None)
    with pytest.raises(ValueError, match="unknown stage"):
        check_min_steps({"vae": 900})
    with pytest.raises(ValueError, match="integers >= 1"):
        check_min_steps({"vae_video": 0})
    with pytest.raises(ValueError, match="a mapping"):
        check_min_steps(900)
    check_min_steps(None)
    with pytest.raises(ValueError, match="budget_margin must be in"):
        _plan(20, margin=1.0)


def _paths(tmp_path):
    names = ["world", "world_val", "vae_video", "vae_audio", "latents", "dit"]
    return {n: tmp_path / n for n in names}


def test_null_budget_keeps_the_fixed_steps_and_a_plan_scales_the_schedules(tmp_path):
    from sora.quickstart import stage_config

    cfg = compose("quickstart", [f"out_dir={tmp_path}", "budget_min=null"])
    paths = _paths(tmp_path)
    fixed = stage_config(cfg, "dit", paths, None)
    assert fixed.trainer.max_steps == cfg.steps.dit
    assert fixed.module.optim.total_steps == cfg.steps.dit
    first = next(int(o.split("=")[1]) for o in cfg.dit_overrides if o.startswith("module.image_first_steps="))
    assert fixed.module.image_first_steps == first and fixed.module.optim.warmup_steps == 100
    stage = {"fixed_steps": cfg.steps.dit, "steps": cfg.steps.dit // 2, "minutes": 10.0}
    planned = stage_config(cfg, "dit", paths, {"stages": {"dit": stage}})
    # the DiT also stops at 1.15x its planned minutes, whatever step it reached (a calibration that
    # underestimated its steps cannot overrun the budget): 690 s
    assert planned.trainer.max_time == "00:00:11:30"
    # ... and plans its steps again while it runs, from the steps it times, to end at its planned minutes
    # (the calibration's step times until it has timed its own): sora.training.deadline
    replan = planned.callbacks.replan
    assert (replan.target_s, replan.cap_s) == (600.0, 690)
    from sora.training.deadline import DeadlineReplan
    from sora.training.run import build_callbacks

    built = next(c for c in build_callbacks(planned) if isinstance(c, DeadlineReplan))
    assert built.target_s == 600.0 and built.priors == {True: None, False: None}
    timed = {**stage, "step_s": 0.6, "image_step_s": 0.4, "video_step_s": 1.2}
    priors = stage_config(cfg, "dit", paths, {"stages": {"dit": timed}}).callbacks.replan
    assert (priors.image_step_s, priors.video_step_s) == (0.4, 1.2)
    # less left in the budget than that (a slow VAE stage, an overrun): the cap is what is left, >= 60 s
    # ... and its steps are planned again for that time, with the step-counted schedules (the image
    # warm-up, the LR's hold and warm-up), so the video steps after the warm-up keep their share
    late = stage_config(cfg, "dit", paths, {"stages": {"dit": stage}}, deadline_s=500.7)
    assert late.trainer.max_time == "00:00:08:20"
    assert (late.callbacks.replan.target_s, late.callbacks.replan.cap_s) == (500, 500)
    again = math.floor(cfg.steps.dit // 2 * 500.7 / 600)
    assert late.trainer.max_steps == again == late.module.optim.total_steps
    assert late.module.image_first_steps == round(first * again / cfg.steps.dit)
    assert late.module.optim.hold_steps == round(first * again / cfg.steps.dit)
    assert late.module.optim.warmup_steps == round(100 * again / cfg.steps.dit)
    assert stage_config(cfg, "dit", paths, {"stages": {"dit": stage}}, deadline_s=3.0).trainer.max_time == (
        "00:00:01:00"
    )
    roomy = stage_config(cfg, "dit", paths, {"stages": {"dit": stage}}, deadline_s=1e4)
    assert roomy.trainer.max_time == "00:00:11:30" and roomy.trainer.max_steps == cfg.steps.dit // 2
    # time left over by the stages before (they took less than expected): the DiT may take it, to its cap
    assert roomy.callbacks.replan.target_s == 690
    early = stage_config(cfg, "dit", paths, {"stages": {"dit": stage}}, deadline_s=640.4)
    assert (early.callbacks.replan.target_s, early.trainer.max_steps) == (640, cfg.steps.dit // 2)
    assert planned.trainer.max_steps == cfg.steps.dit // 2
    assert planned.module.optim.total_steps == cfg.steps.dit // 2  # the cosine decay follows max_steps
    assert planned.module.image_first_steps == round(first / 2)  # the image warm-up keeps its fraction
    assert planned.module.optim.warmup_steps == 50
    # the weight EMA's horizon (1 / (1 - decay) steps) keeps its fraction too: 200 steps -> 100
    assert fixed.callbacks.ema.decay == 0.995 and planned.callbacks.ema.decay == 0.99
    vae = stage_config(cfg, "vae_video", paths, {"stages": {"vae_video": {"fixed_steps": 100, "steps": 300}}})
    assert vae.trainer.max_steps == 300 and vae.module.optim.warmup_steps == 60
    assert vae.trainer.val_check_interval == 300  # validation still once, at the end
    assert vae.trainer.get("max_time") is None  # VAEs finish their steps (final validation, latent stats)
    assert vae.callbacks.get("replan") is None
    # the video VAE keeps its trained weights (vae_video_overrides: callbacks.ema=null): nothing to scale
    assert vae.callbacks.ema is None
    assert apply_stage_plan(vae, {"fixed_steps": 300, "steps": 3}) == {
        "trainer.max_steps": 3,
        "module.optim.warmup_steps": 1,
    }
    audio = stage_config(
        cfg, "vae_audio", paths, {"stages": {"vae_audio": {"fixed_steps": 100, "steps": 300}}}
    )
    assert audio.callbacks.ema.decay == round(1 - 1 / 300, 6)  # 100 steps (0.99) -> 300
    assert apply_stage_plan(audio, {"fixed_steps": 300, "steps": 3})["callbacks.ema.decay"] == pytest.approx(
        1 - 1 / 3, abs=1e-4
    )  # 300 steps -> 3
    with_ema = stage_config(
        compose("quickstart", [f"out_dir={tmp_path}", "vae_video_overrides=[]"]), "vae_video", paths, None
    )
    assert with_ema.callbacks.ema.decay == 0.995  # the experiment's EMA without the quickstart's override
    held = stage_config(cfg, "dit", paths, {"stages": {"dit": {**stage, "fixed_steps": 100, "steps": 100}}})
    held.module.optim.hold_steps = 40  # the LR's hold keeps its fraction too
    assert apply_stage_plan(held, {"fixed_steps": 100, "steps": 30})["module.optim.hold_steps"] == 12
    assert held.module.optim.hold_steps == 12


def test_scaled_ema_decay_scales_the_horizon():
    assert scaled_ema_decay(0.995, 0.25) == 0.98  # 200 steps -> 50
    assert scaled_ema_decay(0.99, 1.0) == 0.99
    assert scaled_ema_decay(0.999, 2.0) == 0.9995  # 1000 steps -> 2000
    assert scaled_ema_decay(0.9, 0.01) == 0.5  # 10 steps -> 0.1, held at the 2-step minimum
    for decay, scale in [(0.0, 1.0), (1.0, 1.0), (0.99, 0.0)]:
        with pytest.raises(ValueError):
            scaled_ema_decay(decay, scale)


def _fake_calibrate(calls):
    def calibrate(configs, *, world_glob, steps, num_frames):
        calls.append(sorted(configs))
        assert configs["dit"].module.image_prob == 0.1  # the stage's own config (dit_overrides applied)
        assert configs["dit"].module.image_audio  # image steps also generate the sound (README)
        assert configs["dit"].module.flow.shift == 3.0  # a fixed timestep shift (README, "DiT arms")
        call = 0.0
        out = {}
        for name, step in (("vae_video", 0.1), ("vae_audio", 0.2)):
            out[name] = timing_from_steps(call, [(2.0 + i * step, False) for i in range(6)])
        frac = dit_image_fraction(steps["dit"], 1000, 0.1)
        dit = [(3.0 + 0.15 * i, True) for i in range(4)] + [(4.0 + 0.35 * i, False) for i in range(4)]
        out["dit"] = timing_from_steps(call, dit, image_fraction=frac)
        return out

    return calibrate


def _fake_calibrate_eval(calls, runs=None):
    def calibrate_eval(cfg, dit_cfg):
        calls.append("eval")
        assert dit_cfg.module.image_prob == 0.1  # the DiT stage's own config
        return {"runs": runs or {1: 10.0, 3: 16.0}, "baseline_clip_s": 1.0}

    return calibrate_eval


def test_remaining_seconds_keep_the_later_stages_and_the_margin():
    from sora.quickstart_budget import remaining_seconds

    plan = _plan(20)
    # 1200 s - 600 elapsed - (export 1 + samples 5 + eval 104) - the 120 s margin
    assert remaining_seconds(plan, 600.0) == pytest.approx(1200 - 600 - 110 - 120)
    assert remaining_seconds(plan, 600.0, after=("eval",)) == pytest.approx(1200 - 600 - 104 - 120)


def test_perturbed_dit_has_content_and_the_rest_is_kept():
    import torch

    from sora.quickstart_budget import perturb_dit

    state = {
        "dit.w": torch.zeros(3, 4),
        "dit.steps": torch.zeros(2, dtype=torch.long),
        "video_vae.w": torch.ones(2),
    }
    torch.manual_seed(0)
    out = perturb_dit(state)
    assert (
        0.01 < out["dit.w"].std() < 0.03 and out["dit.steps"].eq(0).all() and out["video_vae.w"].eq(1).all()
    )


def test_eval_seconds_is_the_line_through_two_runs_less_the_baseline_left_out():
    runs = {3: 16.0, 1: 10.0}
    assert eval_seconds(runs, 60) == 10 + 59 * 3
    assert eval_seconds(runs, 60, baseline_scenes=20, baseline_clip_s=1.0) == 10 + 59 * 3 - 40
    assert eval_seconds(runs, 10, baseline_scenes=20, baseline_clip_s=1.0) == 10 + 9 * 3
    assert eval_seconds({1: 10.0, 3: 9.0}, 60) == 10.0  # noise: a cost per scene never below 0
    for bad in ({1: 10.0}, {1: 1.0, 2: 2.0, 3: 3.0}, {0: 1.0, 2: 2.0}):
        with pytest.raises(ValueError, match="eval calibration"):
            eval_seconds(bad, 60)


def test_eval_calibration_failing_or_done_falls_back_or_is_skipped(tmp_path, capsys):
    from sora.quickstart import Say, plan_training

    def calibrate(configs, **kwargs):
        return {s: StageTiming(step_s=0.2, startup_s=1.0) for s in configs}

    def broken(cfg, dit_cfg):
        raise RuntimeError("no scenes")

    cfg = compose("quickstart", [f"out_dir={tmp_path}"])
    say = Say(tmp_path / "q.log")
    plan = plan_training(
        cfg, tmp_path, _paths(tmp_path), say, spent_s=0.0, world_s=2 * cfg.budget_s.world,
        calibrate=calibrate, calibrate_eval_fn=broken,
    )  # fmt: skip
    assert plan["eval_calibration"] is None and plan["fixed_expected_s"]["eval"] == 2 * cfg.budget_s.eval
    assert "eval calibration failed (RuntimeError: no scenes)" in capsys.readouterr().out
    done = tmp_path / "done"
    done.mkdir()
    (done / "results.json").write_text("{}")  # the eval already ran: neither calibrated nor expected
    plan = plan_training(
        cfg, done, _paths(done), say, spent_s=0.0, world_s=0.0, calibrate=calibrate, calibrate_eval_fn=broken
    )
    assert plan["eval_calibration"] is None and "eval" not in plan["fixed_expected_s"]


def test_plan_is_saved_printed_logged_and_reused_on_rerun(tmp_path, capsys):
    from sora.quickstart import LOG_FILE, Say, plan_training
    from sora.training.run import log_to_file

    cfg = compose("quickstart", [f"out_dir={tmp_path}", "budget_min=20"])
    paths, calls = _paths(tmp_path), []
    with log_to_file(tmp_path / LOG_FILE):
        plan = plan_training(
            cfg,
            tmp_path,
            paths,
            Say(tmp_path / LOG_FILE),
            spent_s=30.0,
            world_s=1.5 * cfg.budget_s.world,
            calibrate=_fake_calibrate(calls),
            calibrate_eval_fn=_fake_calibrate_eval(calls),
        )
    assert calls == [["dit", "vae_audio", "vae_video"], "eval"]
    saved = json.loads((tmp_path / "budget_plan.json").read_text())
    assert saved["stages"] == plan["stages"]
    dit = plan["stages"]["dit"]
    assert dit["image_step_s"] == pytest.approx(0.15) and dit["video_step_s"] == pytest.approx(0.35)
    # The world took 1.5x its expected time: the other stages that do not train are expected 1.5x slower;
    # the eval takes what its calibration says: 10 s + 3 s per scene, less the 40 baseline clips left out.
    assert plan["fixed_expected_s"]["samples"] == pytest.approx(1.5 * cfg.budget_s.samples)
    assert cfg.eval_scenes == 60 and plan["eval_calibration"]["expected_s"] == 10 + 59 * 3 - 40 * 1.0
    assert plan["fixed_expected_s"]["eval"] == pytest.approx(147.0)
    printed, logged = capsys.readouterr().out, (tmp_path / LOG_FILE).read_text()
    for text in (printed, logged):
        assert f"dit: {dit['steps']} steps (fixed {cfg.steps.dit}" in text
        assert "0.150 s" in text and "0.350 s" in text and "calibrating" in text
        expected = "eval: 10 s on 1 scene, 16 s on 3 scenes (calibrated) -> 2.5 min expected for 60 scenes"
        assert expected in text

    def must_not_calibrate(*args, **kwargs):
        raise AssertionError("a saved plan is reused, not calibrated again")

    with log_to_file(tmp_path / LOG_FILE):
        again = plan_training(
            cfg,
            tmp_path,
            paths,
            Say(tmp_path / LOG_FILE),
            spent_s=1.0,
            world_s=0.0,
            calibrate=must_not_calibrate,
        )
    assert again == saved
    assert "is reused" in (tmp_path / LOG_FILE).read_text()
    other = compose("quickstart", [f"out_dir={tmp_path}", "budget_min=30"])
    with pytest.raises(ValueError, match="was planned for"):
        plan_training(other, tmp_path, paths, Say(tmp_path / LOG_FILE), spent_s=1.0, world_s=0.0)


def test_finished_stages_are_not_calibrated(tmp_path):
    from sora.quickstart import Say, plan_training

    cfg = compose("quickstart", [f"out_dir={tmp_path}"])
    paths, calls = _paths(tmp_path), []
    for name in ("vae_video", "vae_audio"):
        paths[name].mkdir()
        (paths[name] / "DONE").write_text("ok")

    def calibrate(configs, **kwargs):
        calls.append(sorted(configs))
        return {"dit": StageTiming(step_s=0.2, startup_s=1.0)}

    plan = plan_training(
        cfg, tmp_path, paths, Say(tmp_path / "q.log"), spent_s=0.0, world_s=0.0, calibrate=calibrate,
        calibrate_eval_fn=_fake_calibrate_eval(calls),
    )  # fmt: skip
    assert calls == [["dit"], "eval"] and list(plan["stages"]) == ["dit"]


def test_calibration_times_real_steps_and_leaves_nothing_behind(world_shards, tmp_path):
    """A real calibration of the DiT (test size) on latents made from a world shard: image and video steps
    are timed, and neither the stage's folder nor the temporary one is left."""
    import tempfile
    from pathlib import Path

    from sora.quickstart import stage_overrides
    from sora.quickstart_budget import calibrate_stages

    cfg = compose("quickstart", [f"out_dir={tmp_path}", "dit_overrides=['data.batch_size=2']"])
    paths = _paths(tmp_path)
    paths["world"] = world_shards
    configs = {"dit": compose("train", stage_overrides(cfg, "dit", paths))}
    before = set(Path(tempfile.gettempdir()).glob("sora-calibration-*"))
    timings = calibrate_stages(
        configs, world_glob=f"{world_shards}/shard-*.tar", steps={"dit": 100}, num_frames=17
    )
    dit = timings["dit"]
    assert dit.detail["image_step_s"] > 0 and dit.detail["video_step_s"] > 0 and dit.startup_s >= 0
    assert dit.detail["image_fraction"] == 0.0 and dit.step_s == dit.detail["video_step_s"]
    assert not paths["dit"].exists()
    assert set(Path(tempfile.gettempdir()).glob("sora-calibration-*")) == before


def test_eval_calibration_runs_the_quickstarts_suite_and_leaves_nothing_behind(tmp_path):
    """A real eval calibration (test-size DiT, 9 frames, 2 sampling steps, one metric): the quickstart's own
    suite on 1 and 3 scenes with the baseline, from an untrained checkpoint, in a temporary folder."""
    import tempfile
    from pathlib import Path

    from sora.quickstart import calibrate_eval, stage_overrides

    cheap = ["suite.modes=[t2av]", "suite.metrics=[temporal]", "suite.broken=[]"]
    cheap.append("suite.distribution_metrics=[]")
    cfg = compose("quickstart", [f"out_dir={tmp_path}", "dit_overrides=[]", "num_frames=9", "sample_steps=2"])
    cfg.eval_overrides = cheap
    dit_cfg = compose("train", stage_overrides(cfg, "dit", _paths(tmp_path)))
    before = set(Path(tempfile.gettempdir()).glob("sora-eval-calibration-*"))
    measured = calibrate_eval(cfg, dit_cfg)
    assert sorted(measured["runs"]) == [1, 3] and all(t > 0 for t in measured["runs"].values())
    assert measured["baseline_clip_s"] > 0
    assert set(Path(tempfile.gettempdir()).glob("sora-eval-calibration-*")) == before
    assert not any(tmp_path.iterdir())


def test_heartbeat_logs_a_stage_progress_to_the_log_file(tmp_path):
    import time

    from sora.quickstart import LOG_FILE, Say, heartbeat
    from sora.training.run import log_to_file

    log = tmp_path / LOG_FILE
    with log_to_file(log), heartbeat(Say(log), "world", lambda: "3/9 shards written", every_s=0.01):
        deadline = time.monotonic() + 60  # the beat thread may wait for a CPU on a loaded machine
        while "world: 3/9 shards written (" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "world: 3/9 shards written (" in log.read_text()


def test_progress_log_writes_at_the_first_step_every_interval_and_at_the_end(caplog):
    from types import SimpleNamespace

    import torch

    from sora.training.progress import ProgressLog

    now = [0.0]
    cb = ProgressLog(every_s=30.0, clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=0, max_steps=10, callback_metrics={"train/loss": torch.tensor(0.5)})
    cb.on_train_start(trainer, None)
    with caplog.at_level(logging.INFO, logger="sora.training.progress"):
        for step in range(1, 11):
            now[0] += 10.0  # 10 s per step: a line at step 1, then every 30 s, and the last step
            trainer.global_step = step
            cb.on_train_batch_end(trainer, torch.nn.Linear(1, 1))
    assert [line.split(",")[0] for line in cb.lines] == [
        "step 1/10 (10%)",
        "step 4/10 (40%)",
        "step 7/10 (70%)",
        "step 10/10 (100%)",
    ]
    assert cb.lines[1] == "step 4/10 (40%), loss 0.5000, 10.000 s/step, about 1.0 min to go"
    assert "Linear: step 10/10" in caplog.text
    with pytest.raises(ValueError, match="every_s must be > 0"):
        ProgressLog(every_s=0)


class _TwoKinds:
    """A module whose first ``warm`` steps are image steps and the others video steps."""

    def __init__(self, warm: int, image_prob: float = 0.0) -> None:
        self.warm, self.image_prob, self._image_step = warm, image_prob, False

    def expected_image_steps(self, start: int, end: int) -> float:
        warm = max(0, min(end, self.warm) - start)
        return warm + self.image_prob * max(0, end - max(start, self.warm))


def test_progress_log_times_image_and_video_steps_apart():
    """During a warm-up of cheap image steps the time to go is theirs plus a count of the untimed video
    steps (not the image rate times every step left); once both kinds are timed, each kind's own rate."""
    from types import SimpleNamespace

    from sora.training.progress import ProgressLog

    now, module = [0.0], _TwoKinds(warm=6)
    cb = ProgressLog(every_s=1.0, clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=0, max_steps=10, callback_metrics={})
    cb.on_train_start(trainer, module)
    lines = {}
    for step in range(1, 11):
        module._image_step = step <= 6  # the step just taken (global step step - 1)
        now[0] += 1.0 if module._image_step else 4.0
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module)
        lines[step] = cb.lines[-1]
    # step 2 done: 4 image steps (1 s) left, then 4 video steps never timed
    assert lines[2].endswith("about 0.1 min to go for the 4 image steps, then 4 video steps (not timed yet)")
    assert lines[6].endswith(", 4 video steps to go (not timed yet)")
    # step 7 done: 3 video steps left at their own 4 s each (the overall rate, 10/7 s, would say 0.07 min)
    assert lines[7].endswith("about 0.2 min to go")
    assert lines[8].endswith(f"about {2 * 4 / 60:.1f} min to go")


def test_dit_expected_image_steps_counts_the_warm_up_and_image_prob():
    from types import SimpleNamespace

    from sora.training.dit_module import AVDiTModule

    module = SimpleNamespace(hparams={"image_first_steps": 100, "image_prob": 0.1})
    count = AVDiTModule.expected_image_steps
    assert count(module, 0, 100) == 100
    assert count(module, 50, 300) == pytest.approx(50 + 0.1 * 200)
    assert count(module, 150, 250) == pytest.approx(10)
    assert count(SimpleNamespace(hparams={}), 0, 40) == 0


def test_stage_eta_is_the_budget_then_the_plan(monkeypatch, tmp_path):
    """Under a time budget the ETA is what the budget has left until the plan exists, then the remaining
    stages' planned seconds (the eval's calibrated time, not its 2-core reference budget scaled by the
    stages run so far); without a budget, the reference budget scaled by the speed of the stages so far."""
    import sora.quickstart as qs

    now = [0.0]
    monkeypatch.setattr(qs.time, "perf_counter", lambda: now[0])

    def takes(seconds: float):
        return lambda: now.__setitem__(0, now[0] + seconds)

    budget = {"world": 10.0, "train": 100.0, "eval": 50.0}
    lines: list[str] = []
    say = lambda message, style="", rule=False: lines.append(message)  # noqa: E731
    fixed = qs.Stages(dict(budget), say)
    fixed.run("world", tmp_path / "a", takes(20.0))  # 2x slower than the reference
    assert lines[-1].endswith(f"about {150 * 2 / 60:.1f} min to go")
    timed = qs.Stages(dict(budget), say, total_s=1200.0)
    timed.run("world", tmp_path / "b", takes(20.0))
    assert lines[-1].endswith(f"about {1180 / 60:.1f} min to go")
    timed.expect({"train": 300.0, "eval": 400.0})
    timed.run("train", tmp_path / "c", takes(100.0))
    assert lines[-1].endswith(f"about {400 / 60:.1f} min to go")
