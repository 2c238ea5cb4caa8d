"""The quickstart: ``python -m sora.quickstart`` goes from nothing to a trained model, clips with sound and a
report, on the embedded synthetic world, on a CPU.

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

The 20-minute run trains on a slice of the world (``world`` in conf/quickstart.yaml: drops of one or two
objects on plain backdrops) and the suite draws its held-out scenes from that same slice.
``python -m sora.quickstart --config-name quickstart_long`` (conf/quickstart_long.yaml) trains longer, on the
whole world.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from sora.config import CONF_DIR, compose, save_resolved_config

console = Console()


def _done(path: Path) -> bool:
    return path.exists()


class Stages:
    """Runs named stages in order, printing a line per stage with elapsed time and an ETA for the rest.

    ``budget`` holds each stage's expected share of the run (seconds on 2 CPU cores at the default size),
    so the ETA is the remaining stages' budget scaled by how fast the finished stages went.
    """

    def __init__(self, budget: dict[str, float]) -> None:
        self.budget, self.spent, self.expected_done = budget, 0.0, 0.0
        self.timings: dict[str, float] = {}

    def run(self, name: str, output: Path, fn: Callable[[], object]) -> None:
        index = list(self.budget).index(name) + 1
        if _done(output):
            console.print(f"[dim]stage {index}/{len(self.budget)} {name}: {output} exists, skipped")
            self.timings[name] = 0.0
            return
        console.rule(f"stage {index}/{len(self.budget)}: {name}")
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        self.timings[name] = took
        self.spent += took
        self.expected_done += self.budget[name]
        rest = sum(v for k, v in self.budget.items() if k not in self.timings)
        eta = rest * (self.spent / max(self.expected_done, 1e-9))
        console.print(f"[green]stage {name} done in {took / 60:.1f} min; about {eta / 60:.1f} min to go")


def run(cfg: DictConfig) -> dict:
    """Run every stage of the quickstart; returns the paths of the artefacts and the eval summary."""
    from data_pipelines.latents import encode_shards
    from data_pipelines.synthetic import WorldConfig, write_shards
    from data_pipelines.synthetic.preview import preview_world
    from sora.checkpoint import load_network_from_checkpoint
    from sora.export import export
    from sora.training.run import train

    out = Path(cfg.out_dir)
    save_resolved_config(cfg, out, "quickstart_config.yaml")
    world, world_val = out / "world", out / "world_val"
    vae_video, vae_audio = out / "vae_video", out / "vae_audio"
    latents, dit, export_dir = out / "latents", out / "dit", out / "export"
    stages = Stages(OmegaConf.to_container(cfg.budget_s))
    common = ["logger=" + cfg.train_logger, f"seed={cfg.seed}"]

    def world_stage() -> None:
        wc = WorldConfig(**OmegaConf.to_container(cfg.world))
        write_shards(wc, world_val, cfg.val_clips, cfg.seed + 1, num_workers=cfg.num_workers)
        write_shards(wc, world, cfg.train_clips, cfg.seed, num_workers=cfg.num_workers)
        preview_world(wc, cfg.seed, min(8, cfg.train_clips), world)  # world/preview.png and preview.gif
        (world / "DONE").write_text("ok")

    def train_stage(experiment: str, run_dir: Path, extra: list[str]) -> Callable[[], None]:
        def fn() -> None:
            overrides = [f"experiment={experiment}", f"out_dir={run_dir}", *common, *extra]
            train(compose("train", overrides))

        return fn

    def latents_stage() -> None:
        video, _ = load_network_from_checkpoint(vae_video / "checkpoints" / "last.ckpt", "vae")
        audio, _ = load_network_from_checkpoint(vae_audio / "checkpoints" / "last.ckpt", "vae")
        encode_shards(
            video,
            audio,
            str(world / "shard-*.tar"),
            latents,
            buckets={"64px": [cfg.num_frames]},
            batch_size=8,
            num_workers=min(1, cfg.num_workers),
        )
        (latents / "DONE").write_text("ok")

    stages.run("world", world / "DONE", world_stage)
    stages.run(
        "vae_video",
        vae_video / "checkpoints" / "last.ckpt",
        train_stage(
            "vae_video_tiny",
            vae_video,
            [
                f"data.train_urls={world}/shard-*.tar",
                f"data.val_urls={world_val}/shard-*.tar",
                f"trainer.max_steps={cfg.steps.vae_video}",
            ],
        ),
    )
    stages.run(
        "vae_audio",
        vae_audio / "checkpoints" / "last.ckpt",
        train_stage(
            "vae_audio_tiny",
            vae_audio,
            [
                f"data.train_urls={world}/shard-*.tar",
                f"data.val_urls={world_val}/shard-*.tar",
                f"trainer.max_steps={cfg.steps.vae_audio}",
            ],
        ),
    )
    stages.run("latents", latents / "DONE", latents_stage)
    stages.run(
        "dit",
        dit / "checkpoints" / "last.ckpt",
        train_stage(
            "dit_tiny",
            dit,
            [
                f"data.train_urls={latents}/shard-*.tar",
                f"trainer.max_steps={cfg.steps.dit}",
                f"module.video_vae_ckpt={vae_video}/checkpoints/last.ckpt",
                f"module.audio_vae_ckpt={vae_audio}/checkpoints/last.ckpt",
                *cfg.get("dit_overrides", []),
            ],
        ),
    )
    stages.run(
        "export", export_dir / "config.json", lambda: export(dit / "checkpoints" / "last.ckpt", export_dir)
    )
    stages.run("samples", out / "samples" / "samples.json", lambda: _samples(cfg, export_dir, world_val, out))
    stages.run("eval", out / "results.json", lambda: _eval(cfg, export_dir, dit, out))

    report = out / "report.html"  # the suite writes results.json, report.html and clips/ into out_dir
    results = json.loads((out / "results.json").read_text())
    summary = {
        "report": str(report),
        "export": str(export_dir),
        "timings_s": stages.timings,
        "summary": results.get("summary", {}),
    }
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2))
    console.print(f"[bold green]quickstart done: open {report}")
    return summary


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
            ],
        )
    )


def _eval(cfg: DictConfig, export_dir: Path, dit: Path, out: Path) -> None:
    """The world suite on the export, beside ground truth and the same architecture untrained."""
    import eval.suite as suite

    untrained = out / "untrained.ckpt"
    if not untrained.exists():
        _untrained_checkpoint(dit / "checkpoints" / "last.ckpt", untrained)
    eval_cfg = compose(
        "eval",
        [
            f"checkpoint={export_dir}",
            f"baseline_checkpoint={untrained}",
            f"out_dir={out}",
            f"suite.num_scenes={cfg.eval_scenes}",
            f"suite.steps={cfg.sample_steps}",
            "suite.baseline_modes=[t2av]",
        ],
    )
    # Held-out scenes come from the world the model was trained on, in its families only.
    world = OmegaConf.to_container(cfg.world, resolve=True)
    with open_dict(eval_cfg):
        eval_cfg.suite.world = world
        if world.get("families"):
            eval_cfg.suite.families = list(world["families"])
    suite.run(eval_cfg)


def _untrained_checkpoint(trained: Path, path: Path) -> None:
    """The trained checkpoint with the DiT and text encoder re-initialised (same VAEs): the lower anchor that
    shows what training the DiT bought."""
    import torch

    from sora.checkpoint import build_module, load_torch_checkpoint

    ckpt = load_torch_checkpoint(trained)
    hp = ckpt["hyper_parameters"]
    torch.manual_seed(0)
    fresh = {"dit": build_module(hp["dit"]), "text_encoder": build_module(hp["text_encoder"])}
    state = dict(ckpt["state_dict"])
    for name, net in fresh.items():
        state.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
    # adaLN-zero leaves a fresh DiT predicting exactly 0; perturb it like a few steps of training would, so
    # the baseline is an untrained network rather than a constant.
    for k, v in state.items():
        if k.startswith("dit.") and v.is_floating_point():
            state[k] = v + 0.02 * torch.randn_like(v)
    torch.save({"state_dict": state, "hyper_parameters": hp}, path)


@hydra.main(config_path=str(CONF_DIR), config_name="quickstart", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
