"""Video VAE encode+decode throughput: ours vs diffusers' AutoencoderKLWan, measured in the same run.

Both are randomly initialised with the same topology (base width, [1, 2, 4, 4] levels, 2 residual blocks per
level, 4x temporal and 8x spatial compression, 16 latent channels) and fed the same clips. Wan always encodes
and decodes frame chunks with its feature cache; ours is timed on whole clips and chunked (`--chunk-frames`).
diffusers is optional: without it only ours is measured.

    python benchmarks/vae.py                      # small CPU defaults, < 1 minute on 2 cores
    python benchmarks/vae.py --device cuda --frames 33 --size 256 --width 96 --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sora.models.video_vae import CausalVideoVAE  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=9, help="clip length, 1 + 4k")
    p.add_argument("--size", type=int, default=64, help="height and width, a multiple of 8")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--width", type=int, default=16, help="base channel width of both models")
    p.add_argument("--chunk-frames", type=int, default=4, help="chunk size for our chunked encode")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 runs under autocast")
    return p.parse_args()


def timeit(fn: Callable[[], torch.Tensor], args: argparse.Namespace) -> float:
    """Median seconds of `fn` over `args.repeats` runs after `args.warmup` runs."""
    times = []
    for i in range(args.warmup + args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        assert torch.isfinite(out.float()).all()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size, device=device) * 2 - 1
    n_frames = args.batch * args.frames
    print(f"clip {tuple(video.shape)} on {args.device} ({args.dtype}, {torch.get_num_threads()} threads)")

    ours = (
        CausalVideoVAE(base_channels=args.width, channel_mult=(1, 2, 4, 4), num_res_blocks=2)
        .to(device)
        .eval()
    )
    print(f"ours: {sum(p.numel() for p in ours.parameters()) / 1e6:.2f} M parameters")

    def run_ours() -> torch.Tensor:
        with torch.no_grad(), autocast:
            return ours.decode(ours.encode(video).mode())

    def run_ours_chunked() -> torch.Tensor:
        with torch.no_grad(), autocast:
            z = ours.encode_chunked(video, args.chunk_frames).mode()
            return ours.decode_chunked(z, max(1, args.chunk_frames // 4))

    results = {
        "ours (whole clip)": timeit(run_ours, args),
        f"ours (chunked, {args.chunk_frames} frames)": timeit(run_ours_chunked, args),
    }
    try:
        from diffusers import AutoencoderKLWan
    except ImportError:
        print("diffusers is not installed (pip install diffusers): measuring ours only, no ratio")
        wan = None
    else:
        wan = AutoencoderKLWan(base_dim=args.width, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2)
        wan = wan.to(device).eval()
        print(
            f"diffusers AutoencoderKLWan: {sum(p.numel() for p in wan.parameters()) / 1e6:.2f} M parameters"
        )

        def run_wan() -> torch.Tensor:
            with torch.no_grad(), autocast:
                return wan.decode(wan.encode(video).latent_dist.mode()).sample

        results["diffusers AutoencoderKLWan"] = timeit(run_wan, args)

    for name, seconds in results.items():
        print(f"{name:<34} encode+decode {seconds:8.3f} s  {n_frames / seconds:8.2f} frames/s")
    if wan is not None:
        base = results["diffusers AutoencoderKLWan"]
        for name, seconds in results.items():
            if name.startswith("ours"):
                print(f"ratio {name} / Wan throughput: {base / seconds:.2f}x")


if __name__ == "__main__":
    main()
