"""Seconds per generated clip: our sampling loop vs the same loop without its optimisations, in one run.

    python benchmarks/sample.py [--checkpoint PATH] [--steps 10] [--repeats 2] [--device cpu|cuda]

Variants (same model, same request, same seed):
- ``ours``: classifier-free guidance batched into one doubled forward pass, bf16 autocast;
- ``no_cfg_batching``: conditional and unconditional passes run separately;
- ``fp32``: CFG batched, no autocast;
- ``baseline``: neither optimisation.
Without ``--checkpoint`` a random-weight model of the quickstart's size is built (timings do not depend on
the weights). Prints the median seconds per clip over interleaved rounds and each variant's ratio to the
baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sora.pipeline import AVPipeline, GenerationRequest
from sora.training.dit_module import AVDiTModule

TINY = {
    "dit": {
        "_target_": "sora.models.dit.AVDiT",
        "hidden_size": 64,
        "depth": 2,
        "num_heads": 2,
        "text_dim": 64,
    },
    "text_encoder": {"_target_": "sora.models.text.ByteTextEncoder", "dim": 64, "depth": 2, "num_heads": 2},
    "video_vae": {
        "_target_": "sora.models.video_vae.CausalVideoVAE",
        "latent_channels": 16,
        "base_channels": 16,
        "channel_mult": [1, 2, 4],
        "num_res_blocks": 1,
        "patch_size": 2,
    },
    "audio_vae": {
        "_target_": "sora.models.audio_vae.AudioVAE",
        "latent_channels": 8,
        "base_channels": 32,
        "channel_mult": [1, 2, 2],
        "num_res_blocks": 1,
    },
}


def build(args: argparse.Namespace, autocast: bool) -> AVPipeline:
    dtype = torch.bfloat16 if autocast else None
    if args.checkpoint:
        return AVPipeline.load(args.checkpoint, device=args.device, autocast_dtype=dtype)
    torch.manual_seed(0)
    module = AVDiTModule(**TINY)
    return AVPipeline.from_module(module.to(args.device), autocast_dtype=dtype)


def time_once(pipe: AVPipeline, req: GenerationRequest, batch_cfg: bool) -> float:
    import sora.pipeline as pipeline_mod

    original = pipeline_mod.guided
    pipeline_mod.guided = lambda *a, **k: original(*a, **{**k, "batch_cfg": batch_cfg})
    try:
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe.generate(req)
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    finally:
        pipeline_mod.guided = original


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    req = GenerationRequest(
        prompt="A big red ball falls and bounces on the floor.",
        steps=args.steps,
        num_frames=args.frames,
        height=args.size,
        width=args.size,
    )
    fast, slow = build(args, autocast=True), build(args, autocast=False)
    variants = {
        "ours": (fast, True),
        "no_cfg_batching": (fast, False),
        "fp32": (slow, True),
        "baseline": (slow, False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.repeats + 1):  # round 0 warms up; rounds interleave variants against drift
        for name, (pipe, batch_cfg) in variants.items():
            seconds = time_once(pipe, req, batch_cfg)
            if round_:
                times[name].append(seconds)
    results = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"[{args.device}] {args.frames} frames {args.size}x{args.size}, {args.steps} steps, "
        "CFG on video and audio"
    )
    for name, seconds in results.items():
        print(
            f"  {name:16s} {seconds:7.3f} s/clip   speed-up vs baseline {results['baseline'] / seconds:5.2f}x"
        )


if __name__ == "__main__":
    main()
