"""Run by tests/training/test_dit_module.py: 2 CPU processes (gloo DDP) train the tiny AV-DiT for 2 steps,
then each rank writes a checksum of its weights to OUT_DIR/rank<r>.txt. The first step is a text-to-image
step (``image_first_steps``), the second a video step."""

import sys
from pathlib import Path

import lightning as L
import torch

from sora.training.dit_module import AVDiTModule

DIT = {"_target_": "sora.models.dit.AVDiT", "hidden_size": 32, "depth": 2, "num_heads": 2, "text_dim": 16}
TEXT = {"_target_": "sora.models.text.ByteTextEncoder", "dim": 16, "depth": 1, "num_heads": 2}


class Latents(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {
            "video_latent": torch.randn(16, 3, 4, 4, generator=g),
            "audio_latent": torch.randn(8, 9, generator=g),
            "has_audio": True,
            "caption": f"clip {i}",
            "fps": 24.0,
        }


def main(out_dir: str) -> None:
    L.seed_everything(0)
    # Step 0 is a text-to-image step, step 1 a video step: DDP (no find_unused_parameters) must take both.
    module = AVDiTModule(
        dit=DIT,
        text_encoder=TEXT,
        optim={"lr": 1e-2, "warmup_steps": 0, "total_steps": 10},
        image_first_steps=1,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(Latents(), batch_size=2))
    total = sum(p.detach().double().sum().item() * (i + 1) for i, p in enumerate(module.parameters()))
    Path(out_dir, f"rank{trainer.global_rank}.txt").write_text(f"{total!r} {trainer.global_step}")


if __name__ == "__main__":
    main(sys.argv[1])
