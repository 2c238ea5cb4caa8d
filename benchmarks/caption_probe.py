"""How much a trained DiT uses a caption's words: the flow loss on real latents with the true captions against
the same captions with words swapped ("left" <-> "right", each colour for another) or removed.

    python benchmarks/caption_probe.py DIT.ckpt 'outputs/quickstart/latents/shard-*.tar' [--samples 96]
        [--frames 1] [--form txt|short|dense|structured]

Text-to-image steps on each clip's first latent frame (``--frames 1``, what the image warm-up trains) or the
whole clip, at fixed noise levels t = 0.5, 0.8, 0.95 and fixed noise per batch, so every variant sees the same
inputs. A model that ignores "left"/"right" has the same loss after the swap (0 %); one that places objects by
the words pays for every swapped side. Prints the mean loss per variant and its rise over the true captions.
Measured 2026-12-02 with 1000 text-to-image steps on the falls-only quickstart slice: dense captions 0.04 %,
short captions 6.0 % (2.0 % with ``model.dit.spatial_embedding=true``), a dense+short mix 0.4 % on dense.
"""

from __future__ import annotations

import argparse
import glob
import re

import numpy as np
import torch

COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "cyan", "pink", "white")


def swap_words(caption: str, a: str, b: str) -> str:
    """``a`` <-> ``b`` as whole words."""
    return re.sub(rf"\b({a}|{b})\b", lambda m: b if m.group(1) == a else a, caption)


def shift_colours(caption: str, by: int = 3) -> str:
    """Each palette colour word replaced by another (a fixed shift in the palette order)."""
    pattern = r"\b(" + "|".join(COLOURS) + r")\b"
    return re.sub(pattern, lambda m: COLOURS[(COLOURS.index(m.group(1)) + by) % len(COLOURS)], caption)


VARIANTS = {
    "true": lambda c: c,
    "left<->right": lambda c: swap_words(c, "left", "right"),
    "colours shifted": shift_colours,
    "empty": lambda c: "",
}


def load_items(pattern: str, limit: int, form: str) -> list[dict]:
    """Decoded latent samples (``data_pipelines.latents``) with the caption of ``form`` (txt or a json
    form)."""
    from data_pipelines.latents import decode_latent_sample
    from data_pipelines.shard_reader import read_shards

    def on_skip(reason: str, where: str, message: str) -> None:
        print(f"skipped ({reason}) {where}: {message}")

    items = []
    for sample in read_shards(sorted(glob.glob(pattern)), on_skip):
        _, item = decode_latent_sample(sample)
        if form != "txt":
            item["caption"] = item["meta"].get("captions", {}).get(form, item["caption"])
        items.append(item)
        if len(items) == limit:
            return items
    if not items:
        raise ValueError(f"no latent samples match {pattern}")
    return items


@torch.no_grad()
def probe(ckpt: str, pattern: str, samples: int, frames: int | None, form: str) -> dict[str, float]:
    from data_pipelines.latents import collate_latents
    from sora.checkpoint import load_torch_checkpoint
    from sora.diffusion.flow import add_noise, velocity_target
    from sora.training.dit_module import AVDiTModule

    state = load_torch_checkpoint(ckpt)
    module = AVDiTModule(**state["hyper_parameters"])
    module.load_state_dict(state["state_dict"], strict=False)
    module.eval()
    items = load_items(pattern, samples, form)
    losses: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for start in range(0, len(items), 16):
        batch = collate_latents(items[start : start + 16])
        zv, za = module.encode_batch(batch)
        if frames is not None:
            zv, za = zv[:, :, :frames], (za[:, :, :frames] if za is not None else None)
        b = zv.shape[0]
        noise = torch.randn(zv.shape, generator=torch.Generator().manual_seed(start))
        for t0 in (0.5, 0.8, 0.95):
            t = torch.full((b, 1), t0)
            x = add_noise(zv, noise, t)
            t_audio = torch.zeros(b, za.shape[2]) if za is not None else None
            for name, change in VARIANTS.items():
                text, mask = module.encode_text([change(c) for c in batch["caption"]])
                pred, _ = module.dit(
                    x,
                    za,
                    t,
                    t_audio,
                    text,
                    mask,
                    video_frame_seconds=module.frame_seconds(batch["fps"], b),
                    audio_frame_seconds=1.0 / module.hparams.audio_latent_rate,
                )
                losses[name].append(float(((pred - velocity_target(zv, noise)) ** 2).mean()))
    return {name: float(np.mean(v)) for name, v in losses.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a DiT-stage Lightning .ckpt")
    parser.add_argument("latents", help="latent shards (a glob)")
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--frames", type=int, default=1, help="latent frames (1: image steps; 0: whole clip)")
    parser.add_argument("--form", default="txt", help="txt or a json caption form (short, dense, structured)")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = probe(args.checkpoint, args.latents, args.samples, args.frames or None, args.form)
    base = result["true"]
    for name, loss in result.items():
        print(f"{name:16s} loss {loss:.5f}  ({100 * (loss / base - 1):+.2f} % over the true captions)")


if __name__ == "__main__":
    main()
