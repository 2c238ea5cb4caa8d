"""Seconds to score a clip with the world suite's metrics: ours against the same metrics without the shared
work memoised and with the per-frame colour distances, in one run, on the same clips.

    python benchmarks/eval_scoring.py [--scenes 8] [--rounds 2]

Clips: ``--scenes`` held-out scenes of the quickstart's world slice (25 frames, 64x64, 24 fps), each as ground
truth and mirrored, both after the H.264 round trip, as the suite scores its data clips. Variants:
- ``ours``: colour labels by one matmul, the objects' tracks and the optical flows memoised by content
  (:mod:`eval.memo`), which is what ``python -m eval.suite`` and the quickstart run;
- ``baseline``: the labels by a per-frame distance (the implementation before), nothing memoised: every
  metric tracks and computes its flows again.
Prints the median seconds per clip over interleaved rounds and the ratio, and checks that both variants give
every metric the same value.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from eval import temporal, tracking
from eval.broken import compressed, mirrored
from eval.memo import Memo
from eval.scenes import world_scenes
from eval.suite import score_clip
from sora.config import compose
from sora.quickstart import eval_config

FORMAT = {"num_frames": 25, "height": 64, "width": 64, "fps": 24, "sample_rate": 16000}


class _Forgetful(Memo):
    """A memo that keeps nothing: every call computes."""

    def get(self, key, make):
        self.misses += 1
        return make()


def _per_frame_labels(video, palette, tolerance=tracking.COLOR_TOLERANCE):
    """The colour labels as they were computed before: a float32 distance to every colour, frame by frame."""
    colors = np.asarray(list(palette.values()), dtype=np.float32)
    labels = np.empty(video.shape[:3], dtype=np.int8)
    for t, frame in enumerate(video):
        d = np.linalg.norm(frame.astype(np.float32)[:, :, None, :] - colors, axis=-1)
        nearest = d.argmin(axis=-1)
        labels[t] = np.where(np.take_along_axis(d, nearest[..., None], -1)[..., 0] <= tolerance, nearest, -1)
    return labels


def _same(a: list[dict], b: list[dict]) -> bool:
    """Equal metric values, NaN equal to NaN."""
    return all(
        x.keys() == y.keys() and all(x[k] == y[k] or (np.isnan(x[k]) and np.isnan(y[k])) for k in x)
        for x, y in zip(a, b, strict=True)
    )


@contextlib.contextmanager
def baseline() -> Iterator[None]:
    saved = tracking._TRACKS, temporal._FLOWS, tracking.label_colors
    tracking._TRACKS, temporal._FLOWS, tracking.label_colors = _Forgetful(1), _Forgetful(1), _per_frame_labels
    try:
        yield
    finally:
        tracking._TRACKS, temporal._FLOWS, tracking.label_colors = saved


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    # the quickstart's own suite config: its world slice, families and held-out scenes
    quickstart = compose("quickstart", [f"eval_scenes={args.scenes}"])
    suite = eval_config(quickstart, "ground_truth", Path(tempfile.gettempdir())).suite
    clips = []
    for scene in world_scenes(suite, FORMAT):
        clips += [compressed(scene.truth), compressed(mirrored(scene.truth))]
    names = list(suite.metrics)
    variants = {"ours": contextlib.nullcontext, "baseline": baseline}
    times: dict[str, list[float]] = {v: [] for v in variants}
    values: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, context in variants.items():
            tracking._TRACKS.clear()
            temporal._FLOWS.clear()
            with context():
                t0 = time.perf_counter()
                scored = [score_clip(clip, names)[0] for clip in clips]
                times[name].append((time.perf_counter() - t0) / len(clips))
            values.setdefault(name, scored)
    if not _same(values["ours"], values["baseline"]):
        raise SystemExit("the two variants gave different metric values")
    base = statistics.median(times["baseline"])
    print(f"{len(clips)} clips ({args.scenes} scenes, truth and mirrored), {len(names)} metrics")
    print(f"{'variant':<10} {'s/clip':>8} {'vs baseline':>12}")
    for name in variants:
        median = statistics.median(times[name])
        print(f"{name:<10} {median:8.3f} {base / median:11.2f}x")
    print("every metric's value identical in both variants")


if __name__ == "__main__":
    main()
