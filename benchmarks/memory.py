"""Training memory per GPU of the AV-DiT sizes: measured on CPU for small shapes, extrapolated to real clips.

What is measured (CPU, this process): the bytes autograd keeps for the backward of one block (saved-tensor
hooks, each storage counted once) at two token counts for every size's width, with and without activation
checkpointing, and with the Ulysses layout (a rank holds N / P tokens, its attention N tokens x H / P heads).
Parameter counts come from building each size on the meta device (no memory). The baseline of every ratio
is the same size without checkpointing, FSDP or SP, computed in the same run.

What is extrapolated (printed as a table): per-GPU peak = model states + activations, where
- model states = parameters x (4 B fp32 weights + 4 B fp32 gradients + 8 B Adam moments) / FSDP degree, plus
  one block's weights gathered in bf16 (FSDP2 frees them after the block);
- activations = depth x (bytes per token per block, the measured slope) x tokens / SP degree, with
  checkpointing depth x (block input bytes per token) x tokens / SP + one block's full activations.
Not counted: the CUDA context and allocator fragmentation (~1-3 GB), the frozen VAEs and text encoder (run
before the step), attention's temporary score tiles (flash/memory-efficient SDPA keep none for the backward).

    python benchmarks/memory.py                        # all sizes, 256x256 2 s and 512x512 4 s clips
    python benchmarks/memory.py --sizes B L --gpu-gb 80
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from sora.config import CONF_DIR
from sora.models.dit import AVDiT
from sora.training.parallel import apply_activation_checkpointing

SIZES = ["tiny", "S", "B", "L", "XL"]
TEXT_DIM = 256  # the hashed-word encoder's width (a 4096-d T5 adds ~1% parameters)


def size_config(name: str) -> dict:
    node = OmegaConf.load(CONF_DIR / "model" / "dit" / f"{name}.yaml")
    defaults = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    merged = OmegaConf.merge(
        *[OmegaConf.load(CONF_DIR / "model" / "dit" / f"{d}.yaml") for d in defaults], node
    )
    cfg = {k: v for k, v in OmegaConf.to_container(merged).items() if k not in ("_target_", "defaults")}
    cfg["text_dim"] = TEXT_DIM
    return cfg


def count_parameters(cfg: dict) -> tuple[int, int]:
    """(all parameters, the largest block's) of a size, built on the meta device."""
    with torch.device("meta"):
        model = AVDiT(**cfg)
    block = max(sum(p.numel() for p in b.parameters()) for b in model.blocks)
    return sum(p.numel() for p in model.parameters()), block


def saved_bytes(cfg: dict, tokens: int, checkpoint: bool) -> int:
    """Bytes autograd saves for the backward of a 1-block model (dual-stream, bf16 autocast) on a clip of
    ``tokens`` video tokens, 4 text tokens and no audio; each storage counted once."""
    torch.manual_seed(0)
    model = AVDiT(**{**cfg, "depth": 1, "single_stream_depth": 0})
    if checkpoint:
        apply_activation_checkpointing(model, every=1)
    side = int(tokens**0.5)
    video = torch.randn(1, cfg.get("video_channels", 16), 1, 2 * side, 2 * (tokens // side))
    text = torch.randn(1, 4, TEXT_DIM)
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v, _ = model(
                video,
                None,
                torch.rand(1),
                None,
                text,
                torch.ones(1, 4, dtype=torch.bool),
                video_frame_seconds=4 / 24,
            )
    return sum(seen.values())


def per_token_block_bytes(cfg: dict, checkpoint: bool, n1: int = 64, n2: int = 256) -> float:
    """Slope of saved bytes against tokens (the per-token cost of one block; the embedding layers add a
    small constant share, counted with the block)."""
    return (saved_bytes(cfg, n2, checkpoint) - saved_bytes(cfg, n1, checkpoint)) / (n2 - n1)


def clip_tokens(height: int, width: int, seconds: float, fps: int = 24, text: int = 64) -> int:
    """Tokens of a clip: video latents 4x temporal / 8x8 spatial, patches 1x2x2; audio 25 latents/s; text."""
    frames = 1 + int(seconds * fps) // 4
    return frames * (height // 16) * (width // 16) + int(seconds * 25) + text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    parser.add_argument("--clips", nargs="+", default=["256x256x2", "512x512x4"], help="HxWxSECONDS")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print("Measured on CPU (bf16 autocast): saved bytes per token per block")
    rows = {}
    for name in args.sizes:
        cfg = size_config(name)
        params, block_params = count_parameters(cfg)
        full = per_token_block_bytes(cfg, checkpoint=False)
        ckpt = per_token_block_bytes(cfg, checkpoint=True)
        rows[name] = (cfg, params, block_params, full, ckpt)
        print(
            f"  {name:>4}: D={cfg['hidden_size']:>5} depth={cfg['depth']:>2} params={params / 1e6:8.1f}M  "
            f"{full / 1024:7.1f} KiB/token/block, checkpointed {ckpt / 1024:6.2f} KiB "
            f"({full / max(ckpt, 1):.0f}x less)"
        )

    configs = [(False, 1, 1), (True, 1, 1), (True, 8, 1), (True, 8, 2), (True, 16, 4)]
    for clip in args.clips:
        h, w, s = clip.split("x")
        n = clip_tokens(int(h), int(w), float(s))
        print(
            f"\nPeak GiB per GPU, {h}x{w} {s} s ({n} tokens), {args.gpu_gb:.0f} GB GPUs; "
            "ratio vs the plain run"
        )
        header = " | ".join(f"ckpt={'y' if c else 'n'} fsdp={f} sp={p}" for c, f, p in configs)
        print(f"| size | {header} |")
        print("|---" * (len(configs) + 1) + "|")
        for name, (cfg, params, block_params, full, ckpt) in rows.items():
            cells, base = [], None
            for checkpoint, fsdp, sp in configs:
                states = params * 16 / fsdp + block_params * 2
                per_block = ckpt if checkpoint else full
                acts = cfg["depth"] * per_block * n / sp + (full * n / sp if checkpoint else 0)
                gib = (states + acts) / 2**30
                base = base or gib
                fits = "" if gib <= args.gpu_gb else " (no)"
                cells.append(f"{gib:7.1f}{fits} x{gib / base:.2f}")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
