"""Aspect-ratio x resolution x duration buckets (Open-Sora 2.0 style): which batch shape a sample goes to."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from data_pipelines.sample_errors import Filtered, SampleError


@dataclass(frozen=True)
class Bucket:
    """One batch shape: ``num_frames`` x ``height`` x ``width``."""

    num_frames: int
    height: int
    width: int


def resolution_area(name: str) -> int:
    """Pixel area of a resolution name: ``"256px"`` = 256 x 256, ``"360p"`` = 360 x 640 (16:9)."""
    m = re.fullmatch(r"(\d+)(px|p)", str(name))
    if m is None:
        raise ValueError(f"buckets: resolution names are like '256px' or '360p', got {name!r}")
    n = int(m.group(1))
    return n * n if m.group(2) == "px" else n * int(round(n * 16 / 9))


class BucketSpec:
    """Resolution x aspect ratio x num_frames buckets, each with a keep probability and a batch size.

    Args:
        buckets: ``{resolution: {num_frames: [keep_prob, batch_size or None]}}``.
        aspect_ratios: width / height ratios; a sample goes to the nearest (in log ratio).
        size_multiple: bucket heights and widths are multiples of this (VAE 8 x patch 2 = 16).
        max_tokens: batch size of entries given as ``None``: ``max_tokens // tokens(T, H, W)`` with
            ``tokens = (1 + (T - 1) // temporal_compression) * (H // spatial) * (W // spatial)``.
    """

    def __init__(
        self,
        buckets: Mapping,
        aspect_ratios: Sequence[float] = (1.0,),
        size_multiple: int = 16,
        max_tokens: int | None = None,
        temporal_compression: int = 4,
        spatial_compression: int = 16,
    ) -> None:
        if not buckets:
            raise ValueError("buckets: at least one resolution is needed")
        if not aspect_ratios or any(float(a) <= 0 for a in aspect_ratios):
            raise ValueError(f"aspect_ratios must be positive width / height ratios, got {aspect_ratios}")
        self.aspect_ratios = [float(a) for a in aspect_ratios]
        self.size_multiple, self.max_tokens = int(size_multiple), max_tokens
        self.tc, self.sc = int(temporal_compression), int(spatial_compression)
        self.table: list[tuple[int, list[tuple[int, float, int | None]]]] = []
        for res, frames in buckets.items():
            entries = []
            for t, value in dict(frames).items():
                keep, bs = (list(value) + [None])[:2] if isinstance(value, Sequence) else (1.0, value)
                if int(t) < 1 or not 0.0 <= float(keep) <= 1.0 or (bs is not None and int(bs) < 1):
                    raise ValueError(
                        f"buckets.{res}.{t}: need num_frames >= 1, keep_prob in [0, 1], "
                        f"batch_size >= 1 or null, got {value}"
                    )
                if bs is None and not max_tokens:
                    raise ValueError(f"buckets.{res}.{t}: batch_size is null, so max_tokens must be set")
                entries.append((int(t), float(keep), None if bs is None else int(bs)))
            self.table.append((resolution_area(res), sorted(entries, reverse=True)))
        self.table.sort(key=lambda e: -e[0])
        self._batch: dict[Bucket, int] = {}

    def size(self, area: int, ratio: float) -> tuple[int, int]:
        """(height, width) of ``area`` pixels at ``ratio`` = width / height, rounded to ``size_multiple``."""
        m = self.size_multiple
        h = max(m, int(round(math.sqrt(area / ratio) / m)) * m)
        w = max(m, int(round(math.sqrt(area * ratio) / m)) * m)
        return h, w

    def tokens(self, b: Bucket) -> int:
        return (1 + (b.num_frames - 1) // self.tc) * max(1, b.height // self.sc) * max(1, b.width // self.sc)

    def assign(
        self, width: int, height: int, duration: float, fps: float, is_image: bool, rng: np.random.Generator
    ) -> Bucket:
        """The bucket of a sample: the largest resolution, then the most frames that fit; raises Filtered."""
        if width <= 0 or height <= 0:
            raise SampleError("bad_json", f"size {width}x{height}")
        ratio = min(self.aspect_ratios, key=lambda a: abs(math.log(a * height / width)))
        by_chance = False
        for area, entries in self.table:
            h, w = self.size(area, ratio)
            if width * height < h * w:
                continue  # never upscale into a larger resolution
            for t, keep, bs in entries:
                if (t != 1 and is_image) or t / fps > duration + 1e-6:
                    continue
                if keep >= 1.0 or rng.random() < keep:
                    bucket = Bucket(t, h, w)
                    self._batch.setdefault(bucket, bs or max(1, int(self.max_tokens) // self.tokens(bucket)))
                    return bucket
                by_chance = by_chance or keep > 0.0
        raise Filtered(f"{width}x{height} {duration:.2f}s", by_chance=by_chance)

    def batch_size(self, bucket: Bucket) -> int:
        return self._batch[bucket]
