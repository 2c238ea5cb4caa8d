"""Training-step time of AVDiT against diffusers' WanTransformer3DModel, measured in the same run.

One step = forward + backward of a random batch (no optimizer). Both models are randomly initialised with the
same width, depth, heads, MLP width, text width and the same number of video tokens; by default AVDiT runs its
video stream only (audio=None), which is the like-for-like comparison (Wan has no audio); `--audio` adds the
audio stream (AVDiT then does more work). Steps of the two models are interleaved and the median is reported,
so load from other processes affects both alike. On CUDA (bf16 autocast) it also prints MFU, with FLOPs
counted from the model configs (`sora.models.dit.estimate_flops`; see `wan_flops` below for Wan).

    python benchmarks/dit.py                       # small CPU defaults, < 1 minute; CUDA too when available
    python benchmarks/dit.py --device cuda --hidden 1536 --depth 30 --heads 12 \
        --frames 21 --height 60 --width 104

diffusers is optional: `pip install 'sora[bench]'`; without it only AVDiT is timed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from sora.models.dit import AVDiT

PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
    "4090": 165e12,
}


def wan_flops(*, hidden: int, depth: int, ffn: int, video_tokens: int, text_tokens: int) -> float:
    """Training FLOPs per sample of a Wan block stack (3x forward matmul FLOPs, same conventions as AVDiT's):
    per video token and block self-attention projections 4 D^2, cross-attention q/out 2 D^2, FFN 2 D F,
    scores/values 4 S D (self) + 4 N_text D (cross); per text token and block the cross-attention k/v
    2 D^2."""
    per_video = (
        2 * (4 * hidden**2 + 2 * hidden**2 + 2 * hidden * ffn) + 4 * (video_tokens + text_tokens) * hidden
    )
    per_text = 2 * 2 * hidden**2
    return 3.0 * depth * (video_tokens * per_video + text_tokens * per_text)


def time_steps(
    steps: dict[str, Callable[[], None]], n: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each step function, calls interleaved."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(n):
        for name, fn in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def build_wan(args: argparse.Namespace):
    try:
        from diffusers import WanTransformer3DModel
    except ImportError:
        return None
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=args.heads,
        attention_head_dim=args.hidden // args.heads,
        in_channels=16,
        out_channels=16,
        text_dim=args.text_dim,
        freq_dim=256,
        ffn_dim=int(args.hidden * 4),
        num_layers=args.depth,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    )


def bench(args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    amp = device.type == "cuda" and args.dtype == "bf16"
    ours = AVDiT(
        hidden_size=args.hidden,
        depth=args.depth,
        num_heads=args.heads,
        text_dim=args.text_dim,
        attn_backend="auto",
    ).to(device)
    wan = build_wan(args)
    wan = wan.to(device) if wan is not None else None
    b, t, h, w = args.batch, args.frames, args.height, args.width
    video = torch.randn(b, 16, t, h, w, device=device)
    audio_len = round(t * 4 / 24 * 25)  # the clip's seconds at 25 audio latents / s (24 fps video)
    audio = torch.randn(b, 8, audio_len, device=device) if args.audio else None
    text = torch.randn(b, args.text_tokens, args.text_dim, device=device)
    mask = torch.ones(b, args.text_tokens, dtype=torch.bool, device=device)
    tv = torch.rand(b, device=device)

    def step_ours() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out_v, out_a = ours(
                video, audio, tv, tv if args.audio else None, text, mask, video_frame_seconds=4 / 24
            )
            loss = out_v.float().square().mean() + (out_a.float().square().mean() if out_a is not None else 0)
        loss.backward()
        ours.zero_grad(set_to_none=True)

    def step_wan() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = wan(hidden_states=video, timestep=tv * 1000, encoder_hidden_states=text, return_dict=False)[
                0
            ]
            loss = out.float().square().mean()
        loss.backward()
        wan.zero_grad(set_to_none=True)

    steps = {"AVDiT": step_ours}
    if wan is not None:
        steps["Wan"] = step_wan
    res = time_steps(steps, args.steps, args.warmup, device)

    nv, na = ours.num_tokens(video.shape, None if audio is None else audio.shape)
    stream = "video+audio" if args.audio else "video stream only"
    print(
        f"\n[{device.type}{' bf16 autocast' if amp else ' fp32'}] hidden={args.hidden} depth={args.depth} "
        f"heads={args.heads} batch={b} video tokens={nv} audio tokens={na} text tokens={args.text_tokens}"
    )
    params = {"AVDiT": sum(p.numel() for p in ours.parameters())}
    if wan is not None:
        params["Wan"] = sum(p.numel() for p in wan.parameters())
    flops = {
        "AVDiT": ours.estimate_flops(
            video.shape, None if audio is None else audio.shape, args.text_tokens, training=True
        ),
        "Wan": b
        * wan_flops(
            hidden=args.hidden,
            depth=args.depth,
            ffn=4 * args.hidden,
            video_tokens=nv,
            text_tokens=args.text_tokens,
        ),
    }
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if device.type == "cuda" and peak is None and amp:
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    for name, sec in res.items():
        line = (
            f"  {name:6s} ({stream if name == 'AVDiT' else 'video'}): {sec * 1e3:8.1f} ms/step  "
            f"params {params[name] / 1e6:.2f}M  model TFLOP/step {flops[name] / 1e12:.4f}"
        )
        if device.type == "cuda" and peak:
            line += f"  MFU {flops[name] / sec / peak:.1%}"
        print(line)
    if wan is None:
        print(
            "  Wan baseline skipped: diffusers is not installed "
            "(pip install 'sora[bench]' or pip install diffusers)"
        )
    else:
        print(
            f"  ratio AVDiT / Wan step time: {res['AVDiT'] / res['Wan']:.2f}x "
            f"({'AVDiT faster' if res['AVDiT'] < res['Wan'] else 'Wan faster'})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--frames", type=int, default=3, help="video latent frames")
    p.add_argument("--height", type=int, default=16, help="video latent height")
    p.add_argument("--width", type=int, default=16, help="video latent width")
    p.add_argument("--text-tokens", type=int, default=16)
    p.add_argument("--text-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--audio", action="store_true", help="AVDiT also runs its audio stream (Wan has none)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: CPU, then CUDA when available",
    )
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16", help="CUDA precision (CPU runs fp32)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="peak dense TFLOP/s for MFU (default: by GPU name)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    if args.hidden % args.heads:
        p.error("--hidden must be divisible by --heads")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = {
        "cpu": ["cpu"],
        "cuda": ["cuda"],
        "auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
    }
    for dev in devices[args.device]:
        bench(args, torch.device(dev))


if __name__ == "__main__":
    main()
