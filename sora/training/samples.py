"""Periodic validation samples: a few prompts, few steps, written as mp4 with sound and logged."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class SampleVideos(L.Callback):
    """Every ``every_n_steps`` (and at the end of training) generate ``prompts`` through the same pipeline as
    ``sample.py`` with EMA weights swapped in when an EMA callback runs, write them under
    ``<out_dir>/samples/step<N>/`` and log them to Weights & Biases when that is the logger."""

    def __init__(
        self,
        prompts: list[str],
        every_n_steps: int = 500,
        steps: int = 10,
        out_dir: str = "outputs",
        video_guidance: float = 3.0,
        audio_guidance: float = 2.0,
        seed: int = 0,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"samples.every_n_steps must be >= 1, got {every_n_steps}")
        self.prompts, self.every_n_steps, self.steps = list(prompts), every_n_steps, steps
        self.out_dir, self.seed = Path(out_dir), seed
        self.video_guidance, self.audio_guidance = video_guidance, audio_guidance
        self.written: list[Path] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            self.generate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step % self.every_n_steps:
            self.generate(trainer, pl_module)

    @torch.no_grad()
    def generate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[Path]:
        if not trainer.is_global_zero or not self.prompts:
            return []
        from sora.pipeline import AVPipeline, GenerationRequest, save_clip
        from sora.training.ema import EMA

        ema = next((c for c in trainer.callbacks if isinstance(c, EMA)), None)
        was_training = pl_module.training
        if ema is not None:
            ema.swap(pl_module, True)
        try:
            pipe = AVPipeline.from_module(pl_module)
            folder = self.out_dir / "samples" / f"step{trainer.global_step:06d}"
            paths = []
            for i, prompt in enumerate(self.prompts):
                req = GenerationRequest(
                    prompt=prompt,
                    seed=self.seed + i,
                    steps=self.steps,
                    video_guidance=self.video_guidance,
                    audio_guidance=self.audio_guidance,
                )
                clip = pipe.generate(req)
                paths.append(save_clip(clip, folder / f"{i:02d}.mp4", config_hash=pipe.config_hash))
        finally:
            if ema is not None:
                ema.swap(pl_module, False)
            pl_module.train(was_training)
        self.written.extend(paths)
        self._log(trainer, paths)
        return paths

    def _log(self, trainer: L.Trainer, paths: list[Path]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log(
                    {
                        "samples": [
                            wandb.Video(str(p), format="mp4", caption=self.prompts[i])
                            for i, p in enumerate(paths)
                        ]
                    },
                    step=trainer.global_step,
                )
