"""Clips/s of the streaming VideoDataModule against a naive single-process loop, on the same shards, same run.

    python benchmarks/data_loader.py [--clips 768] [--workers 2] [--shards DIR]

Shards come from the synthetic physics world when it is importable (64x64, 24 fps, 2 s clips with sound),
else from moving-pattern clips written with ``sora.media`` (same layout). Both loaders produce 17-frame 64x64
windows at 24 fps:

- naive: for each tar member, ``decord.VideoReader`` reads the whole clip, then torch takes 17 frames, resizes
  and normalises them; one process, no audio.
- ours: ``VideoDataModule`` with ``--workers`` DataLoader workers: timestamp-resampled random windows
  (decoded up to the window's end), crop, audio window resampled to 16 kHz, bucketed batches of 8; and the
  same with ``with_audio=False`` (what the naive loop does: pictures only).

Prints clips/s of each (wall clock), the ratios, and the per-core decode rate (clips per CPU-second of all
processes, which stays meaningful on a shared machine). No assertions on time. Each pass starts its workers
afresh, which costs about as much as 100 clips: use enough clips (768) to measure the steady state.

Measured 2026-11-30 (2 cores, idle): naive 145 clips/s; ours 296 clips/s with audio (2.04x), 382 clips/s video
only (2.63x); per core: naive 89, ours 163 (video + audio) / 212 (video only) clips per CPU-second.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import tarfile
import tempfile
import time
from pathlib import Path

import decord
import numpy as np
import torch
import torch.nn.functional as F

from data_pipelines.dataset import VideoDataModule
from data_pipelines.shard_writer import ShardWriter
from sora import media

NUM_FRAMES, FPS, SIZE, BATCH = 17, 24.0, 64, 8


def make_shards(out_dir: Path, num_clips: int, per_shard: int = 32) -> tuple[list[str], str]:
    """Shards of ``num_clips`` 2 s clips; returns (paths, where they came from)."""
    try:
        from data_pipelines.synthetic import WorldConfig, write_shards

        paths = write_shards(
            WorldConfig(), out_dir, num_clips=num_clips, seed=0, clips_per_shard=per_shard, num_workers=2
        )
        return [str(p) for p in paths], "synthetic physics world"
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    paths = []
    for s in range(0, num_clips, per_shard):
        path = out_dir / f"shard-{s // per_shard:06d}.tar"
        with ShardWriter(path) as writer:
            for i in range(s, min(s + per_shard, num_clips)):
                video = np.zeros((48, SIZE, SIZE, 3), np.uint8)
                video[:] = rng.integers(0, 80, 3, dtype=np.uint8)
                for t in range(48):
                    video[t, 20:40, (t + i) % 50 : (t + i) % 50 + 14] = (230, 200, 40)
                audio = (0.1 * rng.standard_normal((1, 32000))).astype(np.float32)
                meta = {"fps": FPS, "num_frames": 48, "width": SIZE, "height": SIZE, "duration": 2.0}
                files = {
                    "mp4": media.encode_mp4(video, FPS, audio, 16000),
                    "json": json.dumps(meta).encode(),
                    "txt": b"a yellow box slides",
                }
                writer.write(f"{i:08d}", files)
        paths.append(str(path))
    return paths, "sora.media moving patterns"


def naive(paths: list[str]) -> int:
    """Whole-clip decord read + torch resize per clip, single process; returns clips loaded."""
    n = 0
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if not member.name.endswith(".mp4"):
                    continue
                vr = decord.VideoReader(io.BytesIO(tar.extractfile(member).read()))
                frames = torch.from_numpy(vr.get_batch(list(range(len(vr)))).asnumpy())  # (T, H, W, 3)
                x = frames[:NUM_FRAMES].permute(0, 3, 1, 2).float()  # (T, 3, H, W)
                x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True) / 127.5 - 1.0
                x.permute(1, 0, 2, 3).contiguous()  # (3, T, H, W)
                n += 1
    return n


def ours(paths: list[str], workers: int, with_audio: bool = True) -> int:
    dm = VideoDataModule(
        paths,
        buckets={"64px": {NUM_FRAMES: [1.0, BATCH]}},
        fps=FPS,
        num_workers=workers,
        with_audio=with_audio,
        shuffle_buffer=64,
        drop_partial=False,
        pin_memory=False,
    )
    n = 0
    for batch in dm.train_dataloader():
        n += batch["video"].shape[0]
    if dm.skipped:
        print(f"  skipped: {dict(dm.skipped)}")
    return n


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (DataLoader workers are joined after a pass)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=768)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=str, default=None, help="existing shard folder (shard-*.tar) to use")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes of each loader (best is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.shards:
            paths, origin = sorted(str(p) for p in Path(args.shards).glob("shard-*.tar")), args.shards
        else:
            paths, origin = make_shards(Path(tmp), args.clips)
        print(
            f"shards: {len(paths)} from {origin}; windows of {NUM_FRAMES} frames {SIZE}x{SIZE} at {FPS:g} fps"
        )
        naive(paths[:1])  # warm up the decoders and the page cache
        results, per_core = {}, {}
        runs = {
            "naive": ("naive (1 process, whole clip, no audio)", lambda: naive(paths)),
            "ours": (f"ours ({args.workers} workers, video + audio)", lambda: ours(paths, args.workers)),
            "ours_video": (
                f"ours ({args.workers} workers, video only)",
                lambda: ours(paths, args.workers, False),
            ),
        }
        for key, (name, fn) in runs.items():
            best, cpu_rate = 0.0, 0.0
            for _ in range(args.repeats):
                start, cpu = time.perf_counter(), _cpu_seconds()
                clips = fn()
                best = max(best, clips / (time.perf_counter() - start))
                cpu_rate = max(cpu_rate, clips / (_cpu_seconds() - cpu))
            results[key], per_core[key] = best, cpu_rate
            print(f"{name:42s} {best:8.1f} clips/s  {cpu_rate:7.1f} clips per CPU-second  ({clips} clips)")
        base = results["naive"]
        print(
            f"ratio ours / naive: {results['ours'] / base:.2f}x (video + audio), "
            f"{results['ours_video'] / base:.2f}x (video only)"
        )
        print(
            f"per-core decode rate (clips per CPU-second, all processes): ours {per_core['ours']:.1f} "
            f"(video + audio), {per_core['ours_video']:.1f} (video only); naive {per_core['naive']:.1f}"
        )


if __name__ == "__main__":
    main()
