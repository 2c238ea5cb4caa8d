"""The quickstart's wall-time budget: from measured step times to the steps each training stage gets.

With ``budget_min`` set, :func:`sora.quickstart.run` writes the world, then calibrates each training stage
(a few optimizer steps of the stage's own config in a temporary folder: :func:`calibrate_stage`), and
:func:`make_plan` sizes the stages:

    training time = budget - time already spent (world, calibration)
                    - expected time of the fixed stages still to run: the eval's from a calibration of its
                      own (the suite on 1 and on 3 scenes: :func:`eval_seconds`), latents, export and
                      samples from their ``budget_s`` seconds times the machine's slowdown measured on
                      the world stage
                    - ``budget_margin`` of the budget (validation at the end of the VAE stages, checkpoints,
                      load that changes during the run) - each training stage's measured start-up time

That time is split between the training stages in the proportions of the fixed ``steps`` (every stage's
steps are multiplied by the same factor, so the recipe's balance is kept) or, with ``budget_shares``, in
the given shares of time. Schedules that count steps scale with the stage: the learning-rate warm-up
(``module.optim.warmup_steps``) and the DiT's text-to-image warm-up (``module.image_first_steps``) keep
their fraction of the stage's steps; the cosine decay follows ``trainer.max_steps`` already.

The plan is written to ``<out_dir>/budget_plan.json`` before the first training stage starts and reused as
is by a rerun (an interrupted run continues with the steps it planned), so a finished stage is never
re-planned. ``budget_min: null`` skips all of this: the fixed ``steps`` exactly.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

TRAINING_STAGES = ("vae_video", "vae_audio", "dit")
FLOOR_MAX_SHARE = 0.5
"""A stage's ``budget_min_steps`` floor takes at most this share of the training time."""
FIXED_STAGES = ("world", "latents", "text", "export", "samples", "eval")
PLAN_FILE = "budget_plan.json"


@dataclass
class StageTiming:
    """What a calibration measured for one training stage (seconds).

    ``step_s``: mean wall time per optimizer step at the stage's mix of steps; ``startup_s``: from the
    call to the end of the first step, less one step; ``detail``: the times the mean is made of (the DiT:
    ``image_step_s``, ``video_step_s``, ``image_fraction``)."""

    step_s: float
    startup_s: float
    detail: dict[str, float] = field(default_factory=dict)


def step_seconds(ends: list[float]) -> list[float]:
    """Durations between consecutive step ends: the first step's own duration (start-up included) is not
    among them, so the first step of a run is never timed."""
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def _median(durations: list[float], what: str) -> float:
    if not durations:
        raise ValueError(f"calibration of {what}: need at least 2 timed steps of that kind")
    return statistics.median(durations)


def timing_from_steps(
    call_s: float, steps: list[tuple[float, bool]], *, image_fraction: float | None = None
) -> StageTiming:
    """A :class:`StageTiming` from a calibration's step ends ``[(t_end, is_image_step), ...]`` (the clock
    read after each step) and ``call_s``, the clock when the stage was called.

    Without ``image_fraction`` every step is one kind (the VAEs). With it (the DiT), image and video steps
    are timed apart and mixed: ``step_s = f * image + (1 - f) * video``. Calibration runs the image steps
    first, then the video steps; the first step of each kind (allocator and autograd warm-up for a new
    shape) is not timed. Medians: a stall of another process on a shared machine does not move them."""
    if len(steps) < 2:
        raise ValueError(f"calibration: need at least 2 timed steps, got {len(steps)}")
    ends = [t for t, _ in steps]
    if image_fraction is None:
        step = _median(step_seconds(ends), "the stage")
        detail: dict[str, float] = {}
    else:
        if not 0.0 <= image_fraction <= 1.0:
            raise ValueError(f"image_fraction must be in [0, 1], got {image_fraction}")
        images = [t for t, image in steps if image]
        videos = [t for t, image in steps if not image]
        if images and videos and max(images) > min(videos):
            raise ValueError("calibration: the DiT's image steps must all come before its video steps")
        # Both kinds are timed when both ran (the plan shows them); a kind the run never takes may be absent.
        need_image, need_video = image_fraction > 0 or len(images) > 1, image_fraction < 1 or len(videos) > 1
        image_s = _median(step_seconds(images), "the DiT's image steps") if need_image else 0.0
        video_s = _median(step_seconds(videos), "the DiT's video steps") if need_video else 0.0
        step = image_fraction * image_s + (1 - image_fraction) * video_s
        detail = {"image_step_s": image_s, "video_step_s": video_s, "image_fraction": image_fraction}
    startup = max(0.0, ends[0] - call_s - step)
    return StageTiming(step_s=step, startup_s=startup, detail=detail)


def dit_image_fraction(steps: int, image_first_steps: int, image_prob: float) -> float:
    """The share of a DiT run's steps that are text-to-image: all of the first ``image_first_steps``, then
    ``image_prob`` of the rest."""
    if steps <= 0:
        raise ValueError(f"steps.dit must be > 0, got {steps}")
    first = min(1.0, image_first_steps / steps)
    return first + (1.0 - first) * image_prob


def check_budget(budget_min: object, shares: object) -> None:
    """Bad ``budget_min`` / ``budget_shares`` fail before any stage runs."""
    if budget_min is None:
        return
    if isinstance(budget_min, bool) or not isinstance(budget_min, (int, float)) or not budget_min > 0:
        raise ValueError(
            f"budget_min must be a number of minutes > 0, or null for the fixed steps; got {budget_min!r}"
        )
    if shares is None:
        return
    if not isinstance(shares, dict) or not shares:
        raise ValueError(f"budget_shares must be null or a mapping stage -> share, got {shares!r}")
    unknown = set(shares) - set(TRAINING_STAGES)
    if unknown or set(shares) != set(TRAINING_STAGES):
        raise ValueError(
            f"budget_shares needs exactly the training stages {list(TRAINING_STAGES)}, got {sorted(shares)}"
        )
    bad = {
        k: v for k, v in shares.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0
    }
    if bad:
        raise ValueError(f"budget_shares must be numbers > 0, got {bad}")


def make_plan(
    *,
    budget_min: float,
    spent_s: float,
    fixed_expected_s: dict[str, float],
    margin: float,
    steps: dict[str, int],
    timings: dict[str, StageTiming],
    shares: dict[str, float] | None = None,
    min_steps: dict[str, int] | None = None,
) -> dict:
    """Steps per training stage that fill ``budget_min`` (see the module docstring for the rule).

    ``spent_s``: seconds already spent in this run (world, calibration); ``fixed_expected_s``: expected
    seconds of the fixed stages still to run; ``timings``: the calibrations of the training stages still to
    run (a stage without one is already done and gets no time); ``min_steps``: a floor of steps for a stage
    that the split would leave below it (as far as :data:`FLOOR_MAX_SHARE` of the training time), the
    other stages sharing what is left by the same rule."""
    check_budget(budget_min, shares)
    check_min_steps(min_steps)
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"budget_margin must be in [0, 1), got {margin}")
    budget_s = 60.0 * budget_min
    todo = [s for s in TRAINING_STAGES if s in timings]
    startup = sum(timings[s].startup_s for s in todo)
    reserved = spent_s + sum(fixed_expected_s.values()) + margin * budget_s + startup
    train_s = budget_s - reserved
    expected = sum(fixed_expected_s.values())
    if todo and train_s <= 0:
        raise ValueError(
            f"budget_min={budget_min} leaves no time to train: {reserved / 60:.1f} min go to the stages "
            f"that do not train (spent {spent_s / 60:.1f}, expected {expected / 60:.1f}), the "
            f"training stages' start-up ({startup / 60:.1f}) and the margin ({margin:.0%}); give a larger "
            "budget_min, or budget_min=null for the fixed steps"
        )
    planned, rule = _split(train_s, todo, steps, timings, shares)
    raised = {}
    for s, floor in (min_steps or {}).items():
        if s in planned and planned[s] < floor:
            cap = math.floor(FLOOR_MAX_SHARE * train_s / timings[s].step_s)
            raised[s] = max(planned[s], min(int(floor), cap))
    if raised:
        others = [s for s in todo if s not in raised]
        left = train_s - sum(raised[s] * timings[s].step_s for s in raised)
        planned, rest = _split(left, others, steps, timings, shares)
        planned.update(raised)
        floors = ", ".join(
            f"{s} {raised[s]} steps"
            + (" (its floor)" if raised[s] == min_steps[s] else f" (floor {min_steps[s]}, half the time)")
            for s in raised
        )
        rule = f"budget_min_steps: {floors}; the other stages: {rest}"
    stages = {
        s: {
            "fixed_steps": int(steps[s]),
            "steps": planned[s],
            "scale": planned[s] / steps[s],
            "step_s": timings[s].step_s,
            "startup_s": timings[s].startup_s,
            "minutes": (planned[s] * timings[s].step_s + timings[s].startup_s) / 60.0,
            **timings[s].detail,
        }
        for s in todo
    }
    return {
        "budget_min": budget_min,
        "inputs": plan_inputs(budget_min, steps, shares, margin, min_steps),
        "rule": rule,
        "spent_s": spent_s,
        "fixed_expected_s": dict(fixed_expected_s),
        "margin_s": margin * budget_s,
        "train_s": max(0.0, train_s),
        "stages": stages,
    }


def _split(
    train_s: float,
    todo: list[str],
    steps: dict[str, int],
    timings: dict[str, StageTiming],
    shares: dict[str, float] | None,
) -> tuple[dict[str, int], str]:
    """``train_s`` seconds split between the ``todo`` stages: in ``shares`` of the time, else in the
    proportions of the fixed ``steps``; the steps and the rule in words."""
    if not todo:
        return {}, "nothing to train"
    if shares:
        total = sum(shares[s] for s in todo)
        seconds = {s: train_s * shares[s] / total for s in todo}
        planned = {s: max(1, math.floor(seconds[s] / timings[s].step_s)) for s in todo}
        return planned, (
            "budget_shares: " + ", ".join(f"{s} {shares[s] / total:.0%}" for s in todo) + " of the time"
        )
    factor = train_s / sum(steps[s] * timings[s].step_s for s in todo)
    planned = {s: max(1, math.floor(factor * steps[s])) for s in todo}
    return planned, f"the fixed steps times {factor:.3f} (the time split in their proportions)"


def check_min_steps(min_steps: object) -> None:
    """``budget_min_steps``: null or {training stage: steps >= 1}."""
    if min_steps is None:
        return
    if not isinstance(min_steps, dict):
        raise ValueError(f"budget_min_steps must be null or a mapping stage -> steps, got {min_steps!r}")
    unknown = sorted(set(min_steps) - set(TRAINING_STAGES))
    if unknown:
        raise ValueError(
            f"budget_min_steps: unknown stage(s) {unknown}; the training stages are {TRAINING_STAGES}"
        )
    bad = {k: v for k, v in min_steps.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"budget_min_steps must be integers >= 1, got {bad}")


def plan_inputs(
    budget_min: float,
    steps: dict[str, int],
    shares: dict | None,
    margin: float,
    min_steps: dict[str, int] | None = None,
) -> dict:
    """What a saved plan was made for; a rerun with other values does not reuse it."""
    inputs = {
        "budget_min": budget_min,
        "steps": {s: int(steps[s]) for s in TRAINING_STAGES},
        "shares": dict(shares) if shares else None,
        "margin": margin,
    }
    if min_steps:  # only when set: plans saved before the floor existed stay reusable
        inputs["min_steps"] = {s: int(v) for s, v in min_steps.items()}
    return inputs


def load_plan(out_dir: Path, inputs: dict) -> dict | None:
    """The plan saved in ``out_dir`` (None without one). A plan made for other inputs is an error: the
    stages it sized may be finished, so quietly planning again would mix two recipes in one run."""
    path = Path(out_dir) / PLAN_FILE
    if not path.exists():
        return None
    plan = json.loads(path.read_text())
    if plan.get("inputs") != inputs:
        raise ValueError(
            f"{path} was planned for {plan.get('inputs')}, this run asks for {inputs}: rerun with the "
            f"planned values, use another out_dir, or delete {path} to plan the unfinished stages again"
        )
    return plan


def save_plan(out_dir: Path, plan: dict) -> Path:
    path = Path(out_dir) / PLAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=2))
    return path


def lightning_duration(seconds: int) -> str:
    """``"DD:HH:MM:SS"``, the string form of Lightning's ``Trainer(max_time=...)``."""
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{sec:02d}"


TIME_CAP_SLACK = 1.15
"""A capped stage stops at this multiple of its planned minutes, whatever step it reached."""


def remaining_seconds(
    plan: dict, elapsed_s: float, after: tuple[str, ...] = ("export", "samples", "eval")
) -> float:
    """Seconds a stage may still take so that the run ends within its budget: the budget less ``elapsed_s``
    (since the run started), the expected time of the fixed stages still ``after`` it and the whole margin,
    which stays for what no calibration sees (measured: the 60-scene eval took 1.3-1.4x its calibration,
    whose untrained VAEs make clips that are cheaper to score). The DiT's time cap: steps that took longer
    than calibrated (0.82 s against 0.75 s per video step) or a VAE stage that overran come out of its time,
    not out of the budget."""
    expected = sum(float(plan["fixed_expected_s"].get(s, 0.0)) for s in after)
    return 60.0 * float(plan["budget_min"]) - elapsed_s - expected - float(plan["margin_s"])


def apply_stage_plan(
    cfg: DictConfig, stage: dict, cap_time: bool = False, deadline_s: float | None = None
) -> dict[str, float]:
    """Set a composed training config to the planned steps, with the step-counted schedules scaled by the
    same factor (``scale`` = planned / fixed steps): ``module.optim.warmup_steps``,
    ``module.optim.hold_steps``, ``module.image_first_steps`` (when the module has them) and the weight
    EMA's horizon, ``1 / (1 - callbacks.ema.decay)`` steps (:func:`scaled_ema_decay`). Returns what was set.

    The EMA's horizon is a schedule too: the checkpoint that the latents, samples and eval use holds the
    EMA's weights, an average over about its last horizon steps. Unscaled, the 2600-step video VAE's 200-step
    horizon (decay 0.995) averaged the last third of a 642-step plan, whose weights were still improving: the
    round trip of the quickstart's 60 held-out scenes kept 0.71 / 0.58 / 0.84 of the objects (three seeds),
    0.74 / 0.64 / 0.85 with the horizon scaled to 49 steps, 0.77 / 0.74 / 0.85 through the trained weights
    (so the quickstart's video VAE has no EMA: ``vae_video_overrides``). The DiT's EMA had averaged its last
    video steps with the end of its image warm-up (its trained weights scored the same: README).

    ``cap_time``: plan the steps again while the stage runs, from the step times it measures, so that it
    ends at its planned minutes, or with ``deadline_s`` at the deadline (as far as the time cap: up to
    :data:`TIME_CAP_SLACK` times the planned minutes when earlier stages took less than expected), with its
    schedules finished (:class:`sora.training.deadline.DeadlineReplan`, ``callbacks.replan``: a calibration
    of a few steps missed the run's image steps by up to a third); and stop at :data:`TIME_CAP_SLACK`
    times the planned minutes (``trainer.max_time``), the backstop, so that steps slower than measured
    cannot overrun the budget (measured: the DiT's steps took 1.35x the calibrated time on a machine busy
    with other jobs). A run that the cap stops ends before its last steps, its learning rate not fully
    decayed; the checkpoint is written as at any end of training. The quickstart caps the DiT only: the VAE
    stages measure their latent statistics in their final validation.
    ``deadline_s`` (:func:`remaining_seconds`): when less time is left than the stage's planned minutes (an
    earlier stage overran, or the machine got slower), the steps are planned again for that time (``steps``
    times deadline / planned seconds), and so are the step-counted schedules with them: a time cap alone would
    cut the run's last steps, which for the DiT are its video steps after the text-to-image warm-up (measured:
    VAE stages slowed by another job left a DiT 48 of its ~280 video steps, and the audio 10 dB too quiet).
    The cap is then at most the deadline (never below 60 s)."""
    steps = int(stage["steps"])
    changed: dict[str, float] = {}
    if cap_time and deadline_s is not None and deadline_s < float(stage["minutes"]) * 60.0:
        steps = max(1, math.floor(steps * max(0.0, deadline_s) / (float(stage["minutes"]) * 60.0)))
        changed["replanned_from_steps"] = int(stage["steps"])
    scale = steps / stage["fixed_steps"]
    changed["trainer.max_steps"] = steps
    with open_dict(cfg):
        cfg.trainer.max_steps = steps
        if cap_time:
            cap_s = math.ceil(stage["minutes"] * 60.0 * TIME_CAP_SLACK)
            if deadline_s is not None:
                cap_s = max(60, min(cap_s, math.floor(deadline_s)))
            cfg.trainer.max_time = lightning_duration(cap_s)  # a dict would reach Lightning as a DictConfig
            changed["trainer.max_time_s"] = cap_s
            target_s = float(stage["minutes"]) * 60.0
            if deadline_s is not None:  # what the budget has left, as far as the cap: a sooner end, or the
                target_s = float(cap_s)  # time that earlier stages left over (expected more than they took)
            if cfg.get("callbacks") is None:
                cfg.callbacks = {}
            cfg.callbacks.replan = {
                "_target_": "sora.training.deadline.DeadlineReplan",
                "target_s": round(target_s, 1),
                "cap_s": cap_s,
                "image_step_s": stage.get("image_step_s"),
                "video_step_s": stage.get("video_step_s", stage.get("step_s")),
            }
            changed["callbacks.replan.target_s"] = round(target_s, 1)
        optim = cfg.module.get("optim")
        if optim is not None and optim.get("warmup_steps"):
            optim.warmup_steps = min(steps, max(1, round(optim.warmup_steps * scale)))
            changed["module.optim.warmup_steps"] = int(optim.warmup_steps)
        if optim is not None and optim.get("hold_steps"):
            optim.hold_steps = min(steps, round(optim.hold_steps * scale))
            changed["module.optim.hold_steps"] = int(optim.hold_steps)
        if cfg.module.get("image_first_steps"):
            cfg.module.image_first_steps = min(steps, round(cfg.module.image_first_steps * scale))
            changed["module.image_first_steps"] = int(cfg.module.image_first_steps)
        ema = (cfg.get("callbacks") or {}).get("ema")
        if ema is not None and ema.get("decay") is not None:
            ema.decay = scaled_ema_decay(float(ema.decay), scale)
            changed["callbacks.ema.decay"] = ema.decay
    return changed


EMA_MIN_HORIZON = 2.0
"""The shortest EMA horizon a plan gives (decay 0.5): a decay of 0 would be no average at all."""


def scaled_ema_decay(decay: float, scale: float) -> float:
    """The EMA decay whose horizon, ``1 / (1 - decay)`` steps, is ``scale`` times that of ``decay``
    (at least :data:`EMA_MIN_HORIZON` steps), rounded to 6 decimals: 0.995 (200 steps) at scale 0.25 ->
    0.98 (50 steps)."""
    if not 0.0 < decay < 1.0 or scale <= 0:
        raise ValueError(f"need 0 < decay < 1 and scale > 0, got decay {decay}, scale {scale}")
    horizon = max(EMA_MIN_HORIZON, scale / (1.0 - decay))
    return round(1.0 - 1.0 / horizon, 6)


def describe_plan(plan: dict) -> list[str]:
    """The plan as lines for the terminal and the log: what was measured, reserved and chosen."""
    lines = [
        f"time budget {plan['budget_min']} min: {plan['train_s'] / 60:.1f} min of training after "
        f"{plan['spent_s'] / 60:.1f} min spent (world, calibration), "
        f"{sum(plan['fixed_expected_s'].values()) / 60:.1f} min expected for "
        f"{', '.join(plan['fixed_expected_s']) or 'no other stage'} "
        f"and a margin of {plan['margin_s'] / 60:.1f} min",
        f"steps: {plan['rule']}",
    ]
    calibration = plan.get("eval_calibration")
    if calibration:
        runs = ", ".join(
            f"{t:.0f} s on {k} scene{'s' if int(k) > 1 else ''}" for k, t in calibration["runs"].items()
        )
        lines.append(
            f"  eval: {runs} (calibrated) -> {calibration['expected_s'] / 60:.1f} min expected for "
            f"{calibration['scenes']} scenes"
        )
    for name, s in plan["stages"].items():
        measured = f"{s['step_s']:.3f} s/step"
        if "image_step_s" in s:
            measured += (
                f" ({s['image_fraction']:.0%} image steps at {s['image_step_s']:.3f} s, "
                f"video steps at {s['video_step_s']:.3f} s)"
            )
        lines.append(
            f"  {name}: {s['steps']} steps (fixed {s['fixed_steps']}, x{s['scale']:.2f}) at {measured}, "
            f"start-up {s['startup_s']:.1f} s: {s['minutes']:.1f} min"
        )
    return lines


EVAL_CALIBRATION_SCENES = (1, 3)
"""The eval is calibrated by running the quickstart's suite on this many scenes (each run with the baseline on
every scene): two points of the line ``fixed cost + scenes x cost per scene``."""


def eval_seconds(
    runs: dict[int, float], scenes: int, baseline_scenes: int | None = None, baseline_clip_s: float = 0.0
) -> float:
    """Expected seconds of a suite run on ``scenes`` scenes, from calibration ``runs`` {scenes: seconds} on
    fewer (two of them, the baseline on every scene): the line through them, less the baseline clips that
    ``baseline_scenes`` leaves out (``baseline_clip_s`` each, as the calibration's records timed them).

    Measured, not scaled: the world stage's slowdown, the earlier rule, said 2x on a machine where the eval
    took the reference's time, and the quickstart ended 8 minutes early."""
    if len(runs) != 2:
        raise ValueError(f"eval calibration: need runs on two scene counts, got {sorted(runs)}")
    (k1, t1), (k2, t2) = sorted(runs.items())
    if k1 == k2 or k1 < 1:
        raise ValueError(f"eval calibration: need two different scene counts >= 1, got {k1} and {k2}")
    per_scene = max(0.0, (t2 - t1) / (k2 - k1))
    skipped = max(0, scenes - baseline_scenes) if baseline_scenes is not None else 0
    return max(0.0, t1 + (scenes - k1) * per_scene - skipped * baseline_clip_s)


def calibration_checkpoint(dit_cfg: DictConfig, path: Path) -> Path:
    """An untrained checkpoint of the DiT stage's module (``dit_cfg``: its composed training config; the VAEs
    built untrained too) that :class:`sora.pipeline.AVPipeline` loads: what the eval's calibration samples
    from. A sampling step costs the same trained or not."""
    from hydra.utils import instantiate

    cfg = copy.deepcopy(dit_cfg)
    with open_dict(cfg):
        cfg.module.video_vae_ckpt = cfg.module.audio_vae_ckpt = None
    with torch.random.fork_rng():  # the run's random state is left as it was
        torch.manual_seed(0)
        module = instantiate(cfg.module, _recursive_=False)
        state = perturb_dit(module.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": dict(module.hparams)}, path)
    return path


def perturb_dit(state: dict, scale: float = 0.02) -> dict:
    """``state`` with noise of std ``scale`` added to the DiT's float tensors (``dit.*``). adaLN-zero makes a
    fresh DiT predict exactly 0, so it would decode one flat clip: perturbed, it is an untrained network
    rather than a constant (the quickstart's baseline, and the eval calibration's model). The calibration's
    clips still cost less to score than a real run's (measured 1.2 s against 1.7 s per generated clip, the
    eval 1.35x its calibration, with and without this): its VAEs are untrained too."""
    return {
        k: v + scale * torch.randn_like(v) if k.startswith("dit.") and v.is_floating_point() else v
        for k, v in state.items()
    }


def timing_dict(timing: StageTiming) -> dict:
    return asdict(timing)


# ---- calibration: a few real steps of each stage, in a temporary folder ------------------------------------

CALIBRATION_STEPS = {"vae_video": 8, "vae_audio": 6}
CALIBRATION_DIT_STEPS = (5, 5)  # image steps, then video steps (the first of each kind is not timed)


def calibrate_stages(
    configs: dict[str, DictConfig],
    *,
    world_glob: str,
    steps: dict[str, int],
    num_frames: int = 17,
) -> dict[str, StageTiming]:
    """Time a few optimizer steps of each training stage's composed config (``configs``: stage -> config)
    on this machine. Each runs in a temporary folder with no checkpoint callback, no validation, no samples
    and a CSV logger, so nothing is left in the stage's own folder (the stage does not look started). The
    DiT runs on latents of one world shard made by untrained VAEs of the same architecture (the latents
    stage has not run yet; a step's time depends on the shapes only) and times image and video steps."""
    timings = {}
    with tempfile.TemporaryDirectory(prefix="sora-calibration-") as tmp:
        for name, cfg in configs.items():
            cfg = copy.deepcopy(cfg)
            run_dir = Path(tmp) / name
            image_fraction = None
            if name == "dit":
                n_image, n_video = CALIBRATION_DIT_STEPS
                image_fraction = dit_image_fraction(
                    steps["dit"],
                    int(cfg.module.get("image_first_steps", 0)),
                    float(cfg.module.get("image_prob", 0)),
                )
                with open_dict(cfg):
                    cfg.data.train_urls = calibration_latents(
                        cfg, world_glob, Path(tmp) / "latents", num_frames
                    )
                    cfg.data.resampled = True  # one shard: no epoch restarts inside the timed steps
                    cfg.module.video_vae_ckpt = cfg.module.audio_vae_ckpt = None
                    cfg.module.image_first_steps, cfg.module.image_prob = n_image, 0.0
                total = n_image + n_video
            else:
                total = CALIBRATION_STEPS[name]
            timings[name] = _time_steps(cfg, run_dir, total, image_fraction)
    return timings


def calibration_latents(cfg: DictConfig, world_glob: str, out: Path, num_frames: int) -> str:
    """Latent shards of the first world shard, encoded by untrained VAEs built from ``cfg.model``'s VAE
    configs (the shapes of the real latents, seconds to make); returns their glob."""
    from data_pipelines.latents import encode_shards
    from data_pipelines.shard_reader import expand_urls
    from sora.checkpoint import build_module

    shards = expand_urls(world_glob)[:1]
    if not shards:
        raise ValueError(f"calibration: no world shards match {world_glob}")
    with torch.random.fork_rng():  # untrained VAEs: the run's random state is left as it was
        torch.manual_seed(0)
        video, audio = build_module(cfg.model.video_vae), build_module(cfg.model.audio_vae)
    encode_shards(video, audio, shards, out, buckets={"64px": [num_frames]}, batch_size=8)
    return f"{out}/shard-*.tar"


def _time_steps(cfg: DictConfig, run_dir: Path, total: int, image_fraction: float | None) -> StageTiming:
    from sora.training.run import train

    times = run_dir / "step_times.json"
    with open_dict(cfg):
        cfg.out_dir = str(run_dir)
        cfg.resume = None
        cfg.ckpt_path = None
        cfg.trainer.max_steps = total
        cfg.trainer.limit_val_batches = 0
        cfg.logger = {
            "_target_": "lightning.pytorch.loggers.CSVLogger",
            "save_dir": str(run_dir),
            "name": "logs",
        }
        for name in ("checkpoint", "samples", "latent_stats", "preemption"):
            if name in cfg.callbacks:
                cfg.callbacks[name] = None
        cfg.callbacks.step_times = {"_target_": "sora.training.progress.StepTimes", "path": str(times)}
    call = time.perf_counter()  # the clock StepTimes reads
    train(cfg)
    record = json.loads(times.read_text())
    steps = [(float(t), bool(image)) for t, image in record["steps"]]
    return timing_from_steps(call, steps, image_fraction=image_fraction)
