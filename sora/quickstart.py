"""The quickstart: ``python -m sora.quickstart`` goes from nothing to a trained model, clips with sound and a
report, on the embedded synthetic world, on a CPU (or on a CUDA GPU where torch sees one: ``device``, see
:func:`quickstart_device`).

Stages, each skipped when its output already exists (rerun to resume after an interruption):

1. ``world``      synthetic-world shards for training, and a held-out set made with another seed
2. ``vae_video``  the tiny causal video VAE            (``train.py experiment=vae_video_tiny``)
3. ``vae_audio``  the tiny audio VAE                   (``train.py experiment=vae_audio_tiny``)
4. ``latents``    the training shards encoded into latent shards
5. ``dit``        the tiny AV-DiT on those latents       (``train.py experiment=dit_tiny``)
6. ``export``     the portable export folder
7. ``samples``    clips for held-out prompts in several modes (t2av, i2v, extend, v2a)
8. ``eval``       the ``world`` suite: generated clips beside ground truth and an untrained model
                  -> report.html

The 20-minute run trains on a slice of the world (``world`` in conf/quickstart.yaml: falls, slides and throws
of one or two objects on plain backdrops) and the suite draws its held-out scenes from that same slice.
``python -m sora.quickstart --config-name quickstart_long`` (conf/quickstart_long.yaml) trains longer (75 min,
four times the clips), on the same slice.

With ``budget_min`` the training stages' steps come from a calibration (:mod:`sora.quickstart_budget`): a
few real steps of each training stage, and the eval itself on 1 and 3 scenes (:func:`calibrate_eval`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from sora.config import CONF_DIR, compose, save_resolved_config

console = Console()
log = logging.getLogger(__name__)
LOG_FILE = "quickstart.log"


class Say:
    """Prints to the terminal (rich) and writes the same line to ``quickstart.log``, whatever else logs there
    (``python -m sora.quickstart`` gets the file from Hydra, ``run(cfg)`` from code gets it from
    :func:`sora.training.run.log_to_file`). Training stages log their own progress there (ProgressLog)."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.file_log = logging.getLogger("sora.quickstart.file")
        self.file_log.propagate = False  # the terminal gets the rich line, not a second copy
        self.file_log.setLevel(logging.INFO)

    def __call__(self, message: str, style: str = "", rule: bool = False) -> None:
        if rule:
            console.rule(message)
        else:
            console.print(f"[{style}]{message}" if style else message, highlight=False, soft_wrap=True)
        self.log(message)

    def log(self, message: str) -> None:
        record = self.file_log.makeRecord(self.file_log.name, logging.INFO, __file__, 0, message, None, None)
        for handler in logging.getLogger().handlers:
            if getattr(handler, "baseFilename", None) == str(self.path):
                handler.handle(record)


@contextlib.contextmanager
def heartbeat(say: Say, name: str, count: Callable[[], str], every_s: float = 30.0) -> Iterator[None]:
    """Writes ``<name>: <count()> (<elapsed> s)`` to the log file every ``every_s`` seconds while the block
    runs: the log's progress for stages whose bar (tqdm, rich) only reaches the terminal."""
    stop, t0 = threading.Event(), time.perf_counter()

    def beat() -> None:
        while not stop.wait(every_s):
            say.log(f"{name}: {count()} ({time.perf_counter() - t0:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Stages:
    """Runs named stages in order, printing a line per stage with elapsed time and an ETA for the rest.

    ``budget`` holds each stage's expected share of the run (seconds on 2 CPU cores at the default size),
    so the ETA is the remaining stages' budget scaled by how fast the finished stages went. Under a time
    budget (``total_s``) the ETA is what is left of it until :meth:`expect` gives this machine's plan, then
    the remaining stages' planned seconds.
    """

    def __init__(
        self, budget: dict[str, float], say: Say | None = None, total_s: float | None = None
    ) -> None:
        self.budget, self.spent, self.expected_done = budget, 0.0, 0.0
        self.total_s, self.planned_s = total_s, None
        self.timings: dict[str, float] = {}
        self.say = say or (lambda message, style="", rule=False: console.print(message))

    def expect(self, planned_s: dict[str, float]) -> None:
        """Seconds each stage is planned to take on this machine (the time budget's plan): the ETA now."""
        self.planned_s = {k: planned_s.get(k, v) for k, v in self.budget.items()}

    def eta(self) -> float:
        """Seconds the stages not run yet are expected to take."""
        rest = [k for k in self.budget if k not in self.timings]
        if self.planned_s is not None:
            return sum(self.planned_s[k] for k in rest)
        if self.total_s is not None:
            return max(0.0, self.total_s - self.spent)
        return sum(self.budget[k] for k in rest) * (self.spent / max(self.expected_done, 1e-9))

    def run(self, name: str, output: Path, fn: Callable[[], object]) -> None:
        index = list(self.budget).index(name) + 1
        if output.exists():
            self.say(f"stage {index}/{len(self.budget)} {name}: {output} exists, skipped", "dim")
            self.timings[name] = 0.0
            return
        self.say(f"stage {index}/{len(self.budget)}: {name}", rule=True)
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        self.timings[name] = took
        self.spent += took
        self.expected_done += self.budget[name]
        self.say(f"stage {name} done in {took / 60:.1f} min; about {self.eta() / 60:.1f} min to go", "green")


def _count(pattern_dir: Path, pattern: str, total: int | None = None) -> Callable[[], str]:
    def count() -> str:
        n = len(list(pattern_dir.glob(pattern))) if pattern_dir.exists() else 0
        return f"{n}/{total} {pattern} written" if total else f"{n} {pattern} written"

    return count


def run(cfg: DictConfig) -> dict:
    """Run every stage of the quickstart; returns the artefacts' paths, the plan and the eval summary."""
    from sora.quickstart_budget import check_budget, check_min_steps
    from sora.training.run import log_to_file

    check_budget(cfg.get("budget_min"), _container(cfg.get("budget_shares")))
    check_min_steps(_container(cfg.get("budget_min_steps")))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with log_to_file(out / LOG_FILE):
        return _run(cfg, out, Say(out / LOG_FILE))


def _container(node: object) -> object:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _run(cfg: DictConfig, out: Path, say: Say) -> dict:
    import torch

    from data_pipelines.latents import encode_shards
    from data_pipelines.synthetic import WorldConfig, write_shards
    from data_pipelines.synthetic.preview import preview_world
    from sora.checkpoint import load_network_from_checkpoint
    from sora.export import export
    from sora.training.run import train

    t_start = time.perf_counter()
    save_resolved_config(cfg, out, "quickstart_config.yaml")
    world, world_val = out / "world", out / "world_val"
    vae_video, vae_audio = out / "vae_video", out / "vae_audio"
    latents, dit, export_dir = out / "latents", out / "dit", out / "export"
    budget_min = cfg.get("budget_min")
    device = quickstart_device(cfg)
    if device != "cpu":
        name = torch.cuda.get_device_name()
        say(f"device: {device} ({name}): training, latents, samples and eval run there")
    stages = Stages(
        OmegaConf.to_container(cfg.budget_s), say, total_s=None if budget_min is None else 60.0 * budget_min
    )
    paths = {"world": world, "world_val": world_val, "vae_video": vae_video, "vae_audio": vae_audio}
    paths.update({"latents": latents, "dit": dit})

    def world_stage() -> None:
        wc = WorldConfig(**OmegaConf.to_container(cfg.world))
        shards = math.ceil(cfg.val_clips / 64) + math.ceil(cfg.train_clips / 64)
        counter = _count(out, "world*/shard-*.tar", shards)
        with heartbeat(say, "world", counter):
            write_shards(wc, world_val, cfg.val_clips, cfg.seed + 1, num_workers=cfg.num_workers)
            write_shards(wc, world, cfg.train_clips, cfg.seed, num_workers=cfg.num_workers)
            preview_world(wc, cfg.seed, min(8, cfg.train_clips), world)  # world/preview.png and preview.gif
        (world / "DONE").write_text("ok")

    def train_stage(name: str) -> Callable[[], None]:
        def fn() -> None:
            deadline = None
            if plan is not None and name == "dit":
                from sora.quickstart_budget import remaining_seconds

                deadline = remaining_seconds(plan, time.perf_counter() - t_start)
            train_cfg = stage_config(cfg, name, paths, plan, deadline_s=deadline)
            planned = int(plan["stages"][name]["steps"]) if plan is not None else None
            if planned is not None and train_cfg.trainer.max_steps < planned:
                say(
                    f"{name}: {deadline / 60:.1f} min left for it of the planned "
                    f"{plan['stages'][name]['minutes']:.1f}: {planned} steps planned again as "
                    f"{train_cfg.trainer.max_steps}, the warm-ups and schedules with them"
                )
            say(f"{name}: {train_cfg.trainer.max_steps} steps (progress lines also in {out / LOG_FILE})")
            train(train_cfg)
            (paths[name] / "DONE").write_text("ok")

        return fn

    def latents_stage() -> None:
        video, _ = load_network_from_checkpoint(vae_video / "checkpoints" / "last.ckpt", "vae")
        audio, _ = load_network_from_checkpoint(vae_audio / "checkpoints" / "last.ckpt", "vae")
        with heartbeat(say, "latents", _count(latents, "shard-*.tar", len(list(world.glob("shard-*.tar"))))):
            encode_shards(
                video, audio, str(world / "shard-*.tar"), latents, device=device, **latents_options(cfg)
            )
        (latents / "DONE").write_text("ok")

    stages.run("world", world / "DONE", world_stage)
    plan = None
    if cfg.get("budget_min") is not None:
        plan = plan_training(
            cfg, out, paths, say, spent_s=time.perf_counter() - t_start, world_s=stages.timings["world"]
        )
        stages.expect(
            {
                **plan["fixed_expected_s"],
                **{k: 60.0 * v["minutes"] for k, v in plan["stages"].items()},
            }
        )
    # A training stage is done when its DONE marker exists (written after train() returns): last.ckpt is
    # also written every 500 steps, so an interrupted stage resumes (resume=auto) rather than being skipped.
    stages.run("vae_video", vae_video / "DONE", train_stage("vae_video"))
    stages.run("vae_audio", vae_audio / "DONE", train_stage("vae_audio"))
    stages.run("latents", latents / "DONE", latents_stage)
    stages.run("text", dit / TEXT_ENCODER_FILE, lambda: pretrain_text(cfg, paths, say))
    stages.run("dit", dit / "DONE", train_stage("dit"))
    stages.run(
        "export", export_dir / "config.json", lambda: export(dit / "checkpoints" / "last.ckpt", export_dir)
    )
    n_samples = cfg.sample_scenes * len(cfg.sample_modes)
    with heartbeat(say, "samples", _count(out / "samples", "*.mp4", n_samples)):
        stages.run(
            "samples", out / "samples" / "samples.json", lambda: _samples(cfg, export_dir, world_val, out)
        )
    with heartbeat(say, "eval", _count(out / "clips", "*.mp4")):
        stages.run("eval", out / "results.json", lambda: _eval(cfg, export_dir, dit, out))

    report = out / "report.html"  # the suite writes results.json, report.html and clips/ into out_dir
    results = json.loads((out / "results.json").read_text())
    summary = {
        "report": str(report),
        "export": str(export_dir),
        "timings_s": stages.timings,
        "budget_min": cfg.get("budget_min"),
        "plan": plan,
        "summary": results.get("summary", {}),
    }
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2))
    total = time.perf_counter() - t_start
    say(f"quickstart done in {total / 60:.1f} min: open {report}", "bold green")
    return summary


TEXT_ENCODER_FILE = "text_encoder.pt"


def text_pretrain_steps(cfg: DictConfig) -> int:
    return int((cfg.get("text_pretrain") or {}).get("steps", 0) or 0)


def latents_options(cfg: DictConfig) -> dict:
    """``encode_shards`` options of the latents stage: the DiT's window, and mirrored twins of every clip
    when ``latents_mirror`` (:mod:`data_pipelines.mirror`)."""
    return {
        "buckets": {"64px": [int(cfg.num_frames)]},
        "batch_size": 8,
        "num_workers": min(1, int(cfg.num_workers)),
        "mirror": bool(cfg.get("latents_mirror", False)),
    }


def pretrain_text(cfg: DictConfig, paths: dict[str, Path], say: Say) -> Path | None:
    """The ``text`` stage: the DiT's text encoder, caption-form aligned on the latents' (txt, short) pairs
    before the DiT trains (``text_pretrain``; :mod:`sora.training.text_align`), saved as
    ``dit/text_encoder.pt``, which the DiT stage starts from (a rerun or a resumed DiT stage reuses it).
    None when ``text_pretrain.steps`` is 0 or unset."""
    import torch

    from sora.checkpoint import build_module
    from sora.training.text_align import caption_pairs, pretrain, retrieval_accuracy, save

    opts = cfg.get("text_pretrain") or {}
    steps = text_pretrain_steps(cfg)
    if steps <= 0:
        return None
    path = paths["dit"] / TEXT_ENCODER_FILE
    if path.exists():
        return path
    t0 = time.perf_counter()
    config = OmegaConf.to_container(compose("train", stage_overrides(cfg, "dit", paths)).module.text_encoder)
    form = str(opts.get("form", "short"))
    pairs, skipped = caption_pairs(f"{paths['latents']}/shard-*.tar", form)
    say(f"dit: aligning the text encoder on {len(pairs)} (txt, {form}) caption pairs, {steps} steps")
    with torch.random.fork_rng():
        torch.manual_seed(int(cfg.seed))
        encoder = build_module(config)
        losses = pretrain(
            encoder, pairs, steps=steps, batch_size=int(opts.get("batch_size", 64)), seed=int(cfg.seed)
        )
    accuracy = retrieval_accuracy(encoder.encode, pairs)
    meta = {"pairs": len(pairs), "skipped": skipped, "form": form, "steps": steps, "retrieval": accuracy}
    save(encoder, config, path, {**meta, "losses": losses, "seconds": time.perf_counter() - t0})
    say(
        f"dit: text encoder aligned in {time.perf_counter() - t0:.0f} s: loss {losses[0]:.2f} -> "
        f"{losses[-1]:.2f}, each dense caption finds its short form among 64 {accuracy:.0%} of the time"
    )
    return path


TRAINING_EXPERIMENTS = {"vae_video": "vae_video_tiny", "vae_audio": "vae_audio_tiny", "dit": "dit_tiny"}


DEVICES = ("auto", "cpu", "cuda")


def quickstart_device(cfg: DictConfig) -> str:
    """Where the quickstart trains, encodes, samples and evaluates: ``cpu`` or ``cuda``, from its ``device``
    (``auto``, the default: CUDA when torch sees a GPU). The world and the text encoder's alignment stay on
    the CPU either way (a simulator, and 200 steps of a small encoder)."""
    import torch

    device = str(cfg.get("device") or "auto").lower()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {cfg.get('device')!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda, but torch sees no CUDA GPU here: use device=cpu (or auto)")
    return device


def stage_overrides(cfg: DictConfig, name: str, paths: dict[str, Path]) -> list[str]:
    """The ``train.py`` overrides of a training stage (``vae_video``, ``vae_audio`` or ``dit``) at its fixed
    steps, then the stage's own list from the config, ``<stage>_overrides`` (``vae_video_overrides``,
    ``dit_overrides``; none for a stage without one). On ``cuda`` (:func:`quickstart_device`) the stage
    trains with ``trainer=gpu`` (one GPU, bf16 mixed precision)."""
    world, world_val = paths["world"], paths["world_val"]
    common = [
        f"experiment={TRAINING_EXPERIMENTS[name]}",
        *(["trainer=gpu"] if quickstart_device(cfg) == "cuda" else []),
        f"out_dir={paths[name]}",
        "logger=" + cfg.train_logger,
        f"seed={cfg.seed}",
        f"trainer.max_steps={cfg.steps[name]}",
        "resume=auto",  # an interrupted stage continues from its newest checkpoint
    ]
    if name in ("vae_video", "vae_audio"):
        data = [f"data.train_urls={world}/shard-*.tar", f"data.val_urls={world_val}/shard-*.tar"]
    else:
        data = [
            f"data.train_urls={paths['latents']}/shard-*.tar",
            f"module.video_vae_ckpt={paths['vae_video']}/checkpoints/last.ckpt",
            f"module.audio_vae_ckpt={paths['vae_audio']}/checkpoints/last.ckpt",
            f"module.sampling.num_frames={cfg.num_frames}",  # generate the window it trains on
            f"data.caption_keys={_caption_keys(cfg)}",
        ]
    return [*common, *data, *(cfg.get(f"{name}_overrides") or [])]


def _caption_keys(cfg: DictConfig) -> str:
    """``caption_keys`` as a Hydra override value: ``{txt:0.5,short:0.5}`` or ``null``."""
    keys = cfg.get("caption_keys")
    if not keys:
        return "null"
    return "{" + ",".join(f"{k}:{float(v)}" for k, v in keys.items()) + "}"


def stage_config(
    cfg: DictConfig, name: str, paths: dict[str, Path], plan: dict | None, deadline_s: float | None = None
) -> DictConfig:
    """The composed training config of a stage: the fixed steps without a plan (``budget_min=null``: exactly
    the config's values), else the plan's steps with the step-counted schedules scaled to them; the DiT's
    time cap is also at most ``deadline_s`` (what the budget has left for it), and its text encoder starts
    from the text stage's ``dit/text_encoder.pt`` when that exists."""
    from sora.quickstart_budget import apply_stage_plan

    train_cfg = compose("train", stage_overrides(cfg, name, paths))
    text_ckpt = paths[name] / TEXT_ENCODER_FILE
    if name == "dit" and text_ckpt.exists():
        with open_dict(train_cfg):
            train_cfg.module.text_encoder_ckpt = str(text_ckpt)
    if plan is not None and name in plan["stages"]:
        apply_stage_plan(train_cfg, plan["stages"][name], cap_time=name == "dit", deadline_s=deadline_s)
    return train_cfg


def plan_training(
    cfg: DictConfig,
    out: Path,
    paths: dict[str, Path],
    say: Say,
    *,
    spent_s: float,
    world_s: float,
    calibrate: Callable[..., dict] | None = None,
    calibrate_eval_fn: Callable[..., dict] | None = None,
) -> dict:
    """The run's training plan: the one saved in ``out`` (a rerun), else calibrate the unfinished training
    stages and the eval, plan (:func:`sora.quickstart_budget.make_plan`), save and print it. ``calibrate``
    and ``calibrate_eval_fn`` (for tests) stand in for :func:`sora.quickstart_budget.calibrate_stages` and
    :func:`calibrate_eval`."""
    from sora.quickstart_budget import (
        FIXED_STAGES,
        TRAINING_STAGES,
        calibrate_stages,
        describe_plan,
        eval_seconds,
        load_plan,
        make_plan,
        plan_inputs,
        save_plan,
    )

    steps = {s: int(cfg.steps[s]) for s in TRAINING_STAGES}
    shares = _container(cfg.get("budget_shares"))
    margin = float(cfg.get("budget_margin", 0.1))
    min_steps = _container(cfg.get("budget_min_steps"))
    inputs = plan_inputs(cfg.budget_min, steps, shares, margin, min_steps)
    plan = load_plan(out, inputs)
    if plan is not None:
        say(
            f"time budget: the plan in {out / 'budget_plan.json'} (made when this run started) is reused",
            "cyan",
        )
        for line in describe_plan(plan):
            say(line)
        return plan
    todo = [s for s in TRAINING_STAGES if not (paths[s] / "DONE").exists()]
    say(f"time budget {cfg.budget_min} min: calibrating {', '.join(todo) or 'nothing'}", "cyan")
    t0 = time.perf_counter()
    configs = {s: compose("train", stage_overrides(cfg, s, paths)) for s in todo}
    timings = (calibrate or calibrate_stages)(
        configs, world_glob=f"{paths['world']}/shard-*.tar", steps=steps, num_frames=int(cfg.num_frames)
    )
    eval_calibration = None
    if not (out / "results.json").exists():
        dit_cfg = configs.get("dit") or compose("train", stage_overrides(cfg, "dit", paths))
        try:
            measured = (calibrate_eval_fn or calibrate_eval)(cfg, dit_cfg)
        except Exception as err:  # the plan falls back to the world's slowdown below
            say(f"time budget: eval calibration failed ({type(err).__name__}: {err}); scaling its budget_s")
            log.warning("eval calibration failed", exc_info=True)
        else:
            scenes = int(cfg.eval_scenes)
            first = eval_config(cfg, "ground_truth", out).suite.get("baseline_scenes")
            eval_calibration = {
                "runs": {str(k): v for k, v in measured["runs"].items()},
                "baseline_clip_s": measured["baseline_clip_s"],
                "scenes": scenes,
                "expected_s": eval_seconds(
                    measured["runs"],
                    scenes,
                    None if first is None else int(first),
                    measured["baseline_clip_s"],
                ),
            }
    spent_s += time.perf_counter() - t0
    budget_s = OmegaConf.to_container(cfg.budget_s)
    # The machine's slowdown against the 2-core reference that budget_s was measured on, from the world stage
    # (when it ran now), scales the expected time of the stages that do not train and were not calibrated.
    speed = min(4.0, max(0.5, world_s / budget_s["world"])) if world_s > 0 and budget_s.get("world") else 1.0
    done_fixed = {
        "latents": paths["latents"] / "DONE",
        "text": paths["dit"] / TEXT_ENCODER_FILE,
        "eval": out / "results.json",
    }
    fixed = {
        s: budget_s.get(s, 0.0) * speed
        for s in FIXED_STAGES
        if s != "world" and not (s in done_fixed and done_fixed[s].exists())
    }
    if text_pretrain_steps(cfg) <= 0:
        fixed.pop("text", None)
    if eval_calibration is not None:
        fixed["eval"] = eval_calibration["expected_s"]
    plan = make_plan(
        budget_min=cfg.budget_min,
        spent_s=spent_s,
        fixed_expected_s=fixed,
        margin=margin,
        steps=steps,
        timings=timings,
        shares=shares,
        min_steps=min_steps,
    )
    plan["speed_vs_reference"] = speed
    plan["eval_calibration"] = eval_calibration
    path = save_plan(out, plan)
    say(f"time budget: plan written to {path}", "cyan")
    for line in describe_plan(plan):
        say(line)
    return plan


def _samples(cfg: DictConfig, export_dir: Path, world_val: Path, out: Path) -> None:
    """A few held-out prompts in several modes, through sample.py's own code path."""
    import numpy as np

    from data_pipelines.synthetic import WorldConfig, generate_clip
    from sora import media
    from sora.pipeline import sample_from_config

    ref_dir = out / "samples" / "inputs"
    ref_dir.mkdir(parents=True, exist_ok=True)
    wc = WorldConfig(**OmegaConf.to_container(cfg.world))
    rows = []
    for i in range(cfg.sample_scenes):
        clip = generate_clip(wc, cfg.seed + 100_000 + i)  # seeds the training set never used
        n = cfg.num_frames
        n_audio = round(n / wc.fps * wc.sample_rate)
        ref = ref_dir / f"scene{i}.mp4"
        media.write_mp4(ref, clip.video[:n], wc.fps, clip.audio[:, :n_audio], wc.sample_rate)
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(clip.video[0])).save(ref_dir / f"scene{i}.png")
        for mode in cfg.sample_modes:
            row = {"prompt": clip.caption, "mode": mode, "seed": i}
            if mode == "i2v":
                row["image"] = str(ref_dir / f"scene{i}.png")
            elif mode in ("extend", "v2a"):
                row["video"] = str(ref)
            rows.append(row)
    requests = out / "samples" / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sample_from_config(
        compose(
            "sample",
            [
                f"checkpoint={export_dir}",
                f"prompts_file={requests}",
                f"steps={cfg.sample_steps}",
                f"out_dir={out / 'samples'}",
                f"device={quickstart_device(cfg)}",
            ],
        )
    )


def calibrate_eval(cfg: DictConfig, dit_cfg: DictConfig) -> dict:
    """Time the quickstart's own eval (:func:`eval_config`: its suite, overrides and sampling steps, with the
    baseline) on :data:`sora.quickstart_budget.EVAL_CALIBRATION_SCENES` scenes, from an untrained checkpoint
    of the DiT stage's architecture (``dit_cfg``), in a temporary folder. Returns ``runs`` {scenes:
    seconds} and ``baseline_clip_s``, the mean seconds of one baseline clip in the larger run's records."""
    import tempfile

    import eval.suite as suite
    from sora.quickstart_budget import EVAL_CALIBRATION_SCENES, calibration_checkpoint

    runs, baseline = {}, []
    with tempfile.TemporaryDirectory(prefix="sora-eval-calibration-") as tmp:
        ckpt = calibration_checkpoint(dit_cfg, Path(tmp) / "untrained.ckpt")
        for scenes in EVAL_CALIBRATION_SCENES:
            small = cfg.copy()
            with open_dict(small):
                small.eval_scenes = scenes
                small.eval_overrides = [*small.get("eval_overrides", []), f"suite.baseline_scenes={scenes}"]
            t0 = time.perf_counter()
            results = suite.run(eval_config(small, ckpt, Path(tmp) / f"scenes{scenes}", baseline=ckpt))
            runs[scenes] = time.perf_counter() - t0
            baseline = [c["seconds"] for c in results["clips"] if c["group"].startswith("baseline/")]
    return {"runs": runs, "baseline_clip_s": sum(baseline) / len(baseline) if baseline else 0.0}


def _eval(cfg: DictConfig, export_dir: Path, dit: Path, out: Path) -> None:
    """The world suite on the export, beside ground truth and the same architecture untrained."""
    import eval.suite as suite

    untrained = out / "untrained.ckpt"
    if not untrained.exists():
        _untrained_checkpoint(dit / "checkpoints" / "last.ckpt", untrained)
    suite.run(eval_config(cfg, export_dir, out, baseline=untrained))


def eval_config(cfg: DictConfig, checkpoint: Path, out: Path, baseline: Path | None = None) -> DictConfig:
    """The quickstart's ``world`` suite config for ``checkpoint`` (an export folder or a ``.ckpt``): its
    held-out scenes come from the world the model was trained on, in its families only, with the
    quickstart's scene count, sampling steps and ``eval_overrides`` (``benchmarks/learning_curve.py`` scores
    a run's intermediate checkpoints with the same config)."""
    overrides = [
        f"checkpoint={checkpoint}",
        f"out_dir={out}",
        f"suite.num_scenes={cfg.eval_scenes}",
        f"suite.steps={cfg.sample_steps}",
        "suite.baseline_modes=[t2av]",
        f"device={quickstart_device(cfg)}",
        *cfg.get("eval_overrides", []),
    ]
    if baseline is not None:
        overrides.append(f"baseline_checkpoint={baseline}")
    eval_cfg = compose("eval", overrides)
    world = OmegaConf.to_container(cfg.world, resolve=True)
    with open_dict(eval_cfg):
        eval_cfg.suite.world = world
        if world.get("families"):
            eval_cfg.suite.families = list(world["families"])
    return eval_cfg


def _untrained_checkpoint(trained: Path, path: Path) -> None:
    """The trained checkpoint with the DiT and text encoder re-initialised (same VAEs): the lower anchor that
    shows what training the DiT bought."""
    import torch

    from sora.checkpoint import build_module, load_torch_checkpoint
    from sora.quickstart_budget import perturb_dit

    ckpt = load_torch_checkpoint(trained)
    hp = ckpt["hyper_parameters"]
    torch.manual_seed(0)
    fresh = {"dit": build_module(hp["dit"]), "text_encoder": build_module(hp["text_encoder"])}
    state = dict(ckpt["state_dict"])
    for name, net in fresh.items():
        state.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
    # adaLN-zero leaves a fresh DiT predicting exactly 0; perturb it like a few steps of training would, so
    # the baseline is an untrained network rather than a constant.
    torch.save({"state_dict": perturb_dit(state), "hyper_parameters": hp}, path)


@hydra.main(config_path=str(CONF_DIR), config_name="quickstart", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
