"""Training steps per second of the quickstart's DiT stage: the old training loop against the new, in one run.

The DiT is the quickstart's (experiment=dit_tiny with conf/quickstart.yaml's dit_overrides) on latent shards
made here from a few synthetic-world clips by untrained VAEs (the real shapes: a step's time depends on the
shapes only). Each configuration trains ``--steps`` image steps and ``--steps`` video steps through
``train.py``'s own code path (Lightning, callbacks, logger, data loader); the configurations alternate for
``--rounds`` rounds so that load from other processes hits both alike, and the median step of each is
reported: steps/s (wall) and CPU seconds per step of the training process (less sensitive to other
processes on a shared machine), and the new/old ratio.

    python benchmarks/dit_step.py                     # ~2 minutes on 2 idle cores
    python benchmarks/dit_step.py --steps 40 --rounds 3

``old``: the training loop before its overhead was cut: torch's per-tensor AdamW loop on CPU and the EMA's
per-tensor lerp over a fresh state_dict at every step. ``new``: the current defaults (fused AdamW, one
foreach lerp over tensors paired once; ``precision: auto``, i.e. bf16 autocast only where this CPU
computes bf16 faster than fp32, see sora/precision.py). ``new-fp32``: the new loop with
``trainer.precision=32-true``, to show what bf16 buys on this CPU (nothing on an AVX2 CPU, where auto
already picks fp32). The model's math is the same in all. ``no-align``: the new loop without the text
encoder's caption-form alignment loss (``module.text_align``), to show its cost. ``short``: the new loop on
the short captions (~8 words) instead of the dense ones (~20 words, padded to the batch's longest): the DiT is
an MM-DiT, its text tokens go through every block beside the 64 of an image step, so this is what the
caption's length costs. ``epochs``: the new loop reading the latents in epochs (``data.resampled=false``) from
``--epoch-clips`` clips (the quickstart's 512 by default: the benchmark's shard copied until there are that
many), where every other configuration streams them resampled as the quickstart does: each epoch restarts the
loader (its workers forked again, their shuffle buffers refilled), a cost the median step hides and the mean
step (``mean s/step``: the fit's timed steps over their wall time) shows.

``--device cuda`` trains every configuration with ``trainer=gpu`` (one GPU, bf16 mixed precision).
``--profile N`` instead profiles N image steps and N video steps of ``new`` (torch.profiler, after 3
untimed steps) and prints the ops that took the most self time, on the host and, on CUDA, on the GPU: where
a step's time goes when it is not in the model's matmuls (on an H200 the quickstart DiT's steps were
host-bound, README "On one GPU").

    python benchmarks/dit_step.py --device cuda --profile 10
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch

from sora.config import compose

# torch's per-tensor AdamW loop (and the old EMA update, patched in by _old_ema)
OLD_OVERRIDES = ["++module.optim.fused=false"]


class _StepClock(L.Callback):
    """Wall and process-CPU clock after every optimizer step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


@contextmanager
def _old_ema() -> Iterator[None]:
    """The EMA update as it was: a fresh state_dict and a Python loop of lerp_ at every step."""
    from sora.training.ema import EMA

    def update(self: EMA, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        with torch.no_grad():
            for name, value in self._target(pl_module).state_dict().items():
                if name in self.shadow:
                    self.shadow[name].lerp_(value.detach().float(), 1.0 - decay)

    new = EMA.on_train_batch_end
    EMA.on_train_batch_end = update
    try:
        yield
    finally:
        EMA.on_train_batch_end = new


def make_latents(tmp: Path, num_frames: int) -> str:
    from data_pipelines.synthetic import WorldConfig, write_shards
    from sora.quickstart_budget import calibration_latents

    qs = compose("quickstart")
    world = WorldConfig(**{**dict(qs.world), "duration": max(1.0, num_frames / 24 + 0.1)})
    write_shards(world, tmp / "world", num_clips=32, seed=0, num_workers=1, progress=False)
    dit = compose("train", ["experiment=dit_tiny", *qs.dit_overrides])
    return calibration_latents(dit, f"{tmp}/world/shard-*.tar", tmp / "latents", num_frames)


def epoch_latents(latents: str, out: Path, clips: int) -> str:
    """``latents``' shards copied until they hold at least ``clips`` clips: an epoch of that many (a step's
    time depends on the shapes only; the loader's restarts on the batches per epoch)."""
    from data_pipelines.shard_reader import expand_urls, read_shards

    def lost(reason: str, where: str, message: str) -> None:
        raise RuntimeError(f"benchmark latents: {reason} at {where}: {message}")

    shards = expand_urls(latents)
    per_copy = sum(1 for _ in read_shards(shards, lost))
    out.mkdir(parents=True, exist_ok=True)
    for i in range(math.ceil(clips / per_copy)):
        for j, shard in enumerate(shards):
            shutil.copyfile(shard, out / f"shard-{i:04d}-{j:02d}.tar")
    return f"{out}/shard-*.tar"


class _Profile(L.Callback):
    """torch.profiler over the optimizer steps ``start`` .. ``start + steps - 1`` of a fit."""

    def __init__(self, start: int, steps: int, cuda: bool) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.start, self.end = start, start + steps
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        self.prof = profile(activities=activities)
        self.cuda = cuda

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.start:
            self.prof.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.end:
            if self.cuda:
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)

    def table(self, rows: int = 15) -> str:
        sort = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        text = self.prof.key_averages().table(sort_by=sort, row_limit=rows)
        if self.cuda:
            text += "\n" + self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        return text


def time_config(
    latents: str,
    tmp: Path,
    overrides: list[str],
    kind: str,
    steps: int,
    old_ema: bool,
    extra: list[L.Callback] = (),
) -> dict:
    """Median wall and CPU seconds per step over ``steps`` steps (after 3 untimed ones) of one fit;
    ``extra`` callbacks join the fit's."""
    import sora.training.run as run

    qs = compose("quickstart")
    image_first = 10**6 if kind == "image" else 0
    cfg = compose(
        "train",
        [
            "experiment=dit_tiny",
            *qs.dit_overrides,
            f"out_dir={tmp / 'run'}",
            "logger=csv",
            f"data.train_urls={latents}",
            "data.resampled=true",
            f"module.image_first_steps={image_first}",
            "module.image_prob=0.0",
            f"trainer.max_steps={steps + 3}",
            "callbacks.checkpoint=null",
            "callbacks.samples=null",
            *overrides,
        ],
    )
    clock = _StepClock()
    build = run.build_callbacks
    run.build_callbacks = lambda c: [*build(c), clock, *extra]
    try:
        if old_ema:
            with _old_ema():
                run.train(cfg)
        else:
            run.train(cfg)
    finally:
        run.build_callbacks = build
    wall = [b - a for a, b in zip(clock.wall[2:], clock.wall[3:], strict=False)]
    cpu = [b - a for a, b in zip(clock.cpu[2:], clock.cpu[3:], strict=False)]
    return {
        "wall_s": statistics.median(wall),
        "cpu_s": statistics.median(cpu),
        "mean_wall_s": sum(wall) / len(wall),
    }


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per fit")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of old and new")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--epoch-clips", type=int, default=512, help="clips of the `epochs` config's epoch")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: trainer=gpu (bf16)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps of `new`")
    args = parser.parse_args()
    device = ["trainer=gpu"] if args.device == "cuda" else []
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="dit-step-") as tmp:
            latents = make_latents(Path(tmp), int(compose("quickstart").num_frames))
            for kind in ("image", "video"):
                prof = _Profile(3, args.profile, cuda=args.device == "cuda")
                timed = time_config(latents, Path(tmp) / kind, device, kind, args.profile + 1, False, [prof])
                print(f"== {kind} steps ({args.device}): median {timed['wall_s']:.3f} s a step")
                print(prof.table())
        return
    configs: dict[str, tuple[list[str], bool]] = {
        "old": (OLD_OVERRIDES, True),
        "new": ([], False),
        "new-fp32": (["trainer.precision=32-true"], False),
        "no-align": (["module.text_align.weight=0.0"], False),
        "short": (["data.caption_keys={short:1.0}"], False),
    }
    results: dict[str, dict[str, list[dict]]] = {k: {"image": [], "video": []} for k in [*configs, "epochs"]}
    with tempfile.TemporaryDirectory(prefix="dit-step-") as tmp:
        latents = make_latents(Path(tmp), int(compose("quickstart").num_frames))
        epochs = epoch_latents(latents, Path(tmp) / "epoch-latents", args.epoch_clips)
        configs["epochs"] = ([f"data.train_urls={epochs}", "data.resampled=false"], False)
        for _ in range(args.rounds):
            for kind in ("image", "video"):
                for name, (overrides, old_ema) in configs.items():
                    run_dir, config = Path(tmp) / name, [*device, *overrides]
                    results[name][kind].append(
                        time_config(latents, run_dir, config, kind, args.steps, old_ema)
                    )
    header = f"{'step':6} {'config':8} {'steps/s':>8} {'s/step':>8} {'cpu s/step':>10} {'vs old':>8}"
    print(f"{header} {'mean s/step':>11} {'vs new':>7}")
    summary = {}
    for kind in ("image", "video"):
        base = statistics.median(r["wall_s"] for r in results["old"][kind])
        new_mean = statistics.median(r["mean_wall_s"] for r in results["new"][kind])
        for name in configs:
            wall = statistics.median(r["wall_s"] for r in results[name][kind])
            cpu = statistics.median(r["cpu_s"] for r in results[name][kind])
            mean = statistics.median(r["mean_wall_s"] for r in results[name][kind])
            summary[f"{kind}/{name}"] = {
                "steps_per_s": 1 / wall,
                "s_per_step": wall,
                "cpu_s_per_step": cpu,
                "mean_s_per_step": mean,
            }
            row = f"{kind:6} {name:8} {1 / wall:8.2f} {wall:8.3f} {cpu:10.3f} {base / wall:7.2f}x"
            print(f"{row} {mean:11.3f} {new_mean / mean:6.2f}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
