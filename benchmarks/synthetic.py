"""Clips/s of the synthetic physics world, end to end (simulate + render + sound + caption + encode + shard).

    python benchmarks/synthetic.py [--clips 240] [--workers 2] [--width 64] [--height 64]

1. Where one clip's time goes: the CPU time of each stage in this process over ``--profile-clips`` clips.
2. ``write_shards`` with 1 worker (the baseline, in-process) and with ``--workers`` worker processes, into
   temporary folders: wall-clock clips/s, the speed-up over the baseline, and clips per CPU-second of all
   processes (meaningful on a machine shared with other jobs, where wall clock is not).

No assertions on time; the target is >= 20 two-second 64x64 clips/s on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from data_pipelines.synthetic import WorldConfig, clip_seed, render_frames, synthesize_audio, write_shards
from data_pipelines.synthetic.captions import describe
from data_pipelines.synthetic.config import FAMILIES
from data_pipelines.synthetic.shards import encode_sample, generate_clip


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def profile_stages(config: WorldConfig, num_clips: int) -> dict[str, float]:
    """CPU milliseconds per clip of each stage (all threads of this process, so x264's too).

    CPU time rather than wall clock: on a machine shared with other jobs it still says what a stage costs.
    Rendering, sound and captioning are timed again on the finished clip's metadata; the simulation's share
    is what is left of ``generate_clip``.
    """
    retimed = {  # stage -> work on a finished clip and its index
        "render": lambda clip, i: render_frames(clip.meta),
        "sound": lambda clip, i: synthesize_audio(clip.meta),
        "caption": lambda clip, i: describe(clip.meta, np.random.default_rng(i)),
        "encode sample": lambda clip, i: encode_sample(clip, str(i)),
    }
    totals = dict.fromkeys(("simulate", *retimed), 0.0)
    for i in range(num_clips):
        start = time.process_time()
        clip = generate_clip(config, clip_seed(0, i), FAMILIES[i % len(FAMILIES)])
        simulate = time.process_time() - start
        for stage, work in retimed.items():
            start = time.process_time()
            work(clip, i)
            seconds = time.process_time() - start
            totals[stage] += seconds
            if stage != "encode sample":  # part of generate_clip
                simulate -= seconds
        totals["simulate"] += max(simulate, 0.0)
    return {stage: 1000 * seconds / num_clips for stage, seconds in totals.items()}


def end_to_end(config: WorldConfig, num_clips: int, workers: int, out_dir: Path) -> tuple[float, float]:
    """(wall clips/s, clips per CPU-second) of writing ``num_clips`` clips to shards."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    write_shards(
        config, out_dir, num_clips=num_clips, seed=0, clips_per_shard=64, num_workers=workers, progress=False
    )
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return num_clips / wall, num_clips / cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=240, help="clips per end-to-end run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile-clips", type=int, default=60)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    args = parser.parse_args()
    config = WorldConfig(width=args.width, height=args.height)
    generate_clip(config, clip_seed(0, 0))  # warm up imports and caches outside the timings

    stages = profile_stages(config, args.profile_clips)
    print(f"one {config.width}x{config.height}, {config.duration:g} s clip, stage by stage (CPU ms):")
    for stage, ms in stages.items():
        print(f"  {stage:<13} {ms:7.2f}")
    print(
        f"  {'total':<13} {sum(stages.values()):7.2f}  -> {1000 / sum(stages.values()):.1f} clips/s per core"
    )

    with tempfile.TemporaryDirectory() as tmp:
        base_rate, base_cpu = end_to_end(config, args.clips, 1, Path(tmp) / "one")
        rate, cpu = end_to_end(config, args.clips, args.workers, Path(tmp) / "many")
    print(f"end to end, {args.clips} clips to shards:")
    print(f"  1 worker (baseline): {base_rate:6.1f} clips/s   {base_cpu:5.1f} clips per CPU-second")
    print(f"  {args.workers} workers:          {rate:6.1f} clips/s   {cpu:5.1f} clips per CPU-second")
    print(f"  speed-up: {rate / base_rate:.2f}x")


if __name__ == "__main__":
    main()
