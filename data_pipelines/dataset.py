"""Streaming video+audio DataModule on webdataset shards, with aspect-ratio x duration buckets.

A sample (``mp4`` or ``jpg``/``png`` bytes, ``json`` metadata, ``txt`` caption) goes to a bucket chosen from
its json (aspect ratio, size, duration). Buckets are given Open-Sora 2.0 style,
``{resolution: {num_frames: [keep_prob, batch_size]}}`` (``batch_size: null`` = ``max_tokens`` // latent
tokens), times a list of aspect ratios. Each worker keeps one list per bucket and yields a batch when a list
is full, so a batch never mixes shapes. decord reads a window of ``num_frames`` at the target ``fps``, frames
picked by TIMESTAMP (a 30 fps source read at 24 fps neither drifts nor slows down): a random window in
training, the first one in validation. The audio window ``[t0, t0 + T / fps)`` comes from
:func:`sora.media.read_audio`, resampled to 16 kHz mono (zeros and ``has_audio=False`` without a track).
Batches are dicts::

    video (B, 3, T, H, W) float in [-1, 1]    audio (B, 1, S) in [-1, 1], S = round(T / fps * sample_rate)
    has_audio (B,) bool   caption list[str]   fps (B,) float   meta list[dict] (json, key, url, window_start)

Bad samples (undecodable media, bad json, corrupt tar data, missing shards) are skipped, logged and counted by
reason; the counts travel with the worker's next batch (``batch["_stats"]``, or a stats-only message after its
last batch that the loader absorbs) and are summed in ``DataModule.skipped`` when the batch is recorded
(``on_before_batch_transfer`` under Lightning, at iteration outside it). :class:`DataStatsCallback` logs them.
Good samples that no bucket takes are counted apart (``filtered``).

Resume: ``state_dict()`` holds the epoch, the samples consumed, and per rank and worker the number of raw
samples pulled from the seeded (deterministic) shuffled stream up to the last consumed batch; on resume each
worker skips that many raw samples without decoding them. Exactly reproduced with the same shards, seed,
world size and ``num_workers``: shard order, shuffle buffer order, windows and crops (seeded by stream
position), the samples that sat in a not-yet-full bucket at checkpoint time (their stream positions are saved
and they are decoded again), whose turn it is among the workers, hence every later batch. Not reproduced:
with another world size or worker count the skip is spread evenly over the new workers (approximate).

Multi-GPU: bucketing makes the number of batches per rank data-dependent, so a finite epoch can leave one rank
waiting for another at the end; use ``resampled=True`` (infinite, ``epoch_samples`` only for bookkeeping) and
``trainer.max_steps``.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice

import decord
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sora import media

log = logging.getLogger(__name__)

VIDEO_KEYS = ("mp4", "webm", "mkv", "mov", "avi")
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


class SampleError(Exception):
    """A sample that cannot be used; ``reason`` is the counter it is recorded under."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class Filtered(Exception):
    """A good sample that no bucket takes (too small, too short, or not kept by ``keep_prob``)."""


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
        raise Filtered(f"{width}x{height} {duration:.2f}s")

    def batch_size(self, bucket: Bucket) -> int:
        return self._batch[bucket]


def resize_crop(frames: np.ndarray, height: int, width: int, rng: np.random.Generator | None) -> torch.Tensor:
    # numpy does the element-wise work: single-threaded, so it stays fast in a busy main process too
    """uint8 (T, H0, W0, 3) -> float (3, T, height, width) in [-1, 1]: crop to the aspect (random when
    ``rng``, else centred), then resize with antialiasing."""
    t, h0, w0, _ = frames.shape
    ch, cw = min(h0, round(w0 * height / width)), min(w0, round(h0 * width / height))
    y = int(rng.integers(0, h0 - ch + 1)) if rng is not None else (h0 - ch) // 2
    x = int(rng.integers(0, w0 - cw + 1)) if rng is not None else (w0 - cw) // 2
    clip = np.ascontiguousarray(frames[:, y : y + ch, x : x + cw].transpose(3, 0, 1, 2), dtype=np.float32)
    if (ch, cw) != (height, width):  # (3, T, ch, cw) -> (3, T, height, width); kernel >= 0 keeps [0, 255]
        clip = F.interpolate(
            torch.from_numpy(clip), size=(height, width), mode="bilinear", antialias=True, align_corners=False
        ).numpy()
    clip *= 1.0 / 127.5
    clip -= 1.0
    return torch.from_numpy(clip)


def window_indices(starts: np.ndarray, t0: float, num_frames: int, fps: float) -> np.ndarray:
    """Source frame shown at each target time ``t0 + i / fps``: the last frame starting at or before it."""
    targets = t0 + np.arange(num_frames) / fps
    return np.clip(np.searchsorted(starts, targets + 1e-6, side="right") - 1, 0, len(starts) - 1)


def load_audio_window(data: bytes, start: float, duration: float, sample_rate: int) -> torch.Tensor | None:
    """Mono float (1, round(duration * sample_rate)) audio from ``start`` s, or None without a track."""
    audio, rate = media.read_audio(data, start=start, duration=duration)
    if audio is None:
        return None
    wav = media.resample_audio(media.to_mono(audio), rate, sample_rate).clamp_(-1.0, 1.0)
    n = round(duration * sample_rate)
    return wav[:, :n] if wav.shape[1] >= n else F.pad(wav, (0, n - wav.shape[1]))


def decode_av_sample(
    sample: dict,
    spec: BucketSpec,
    *,
    fps: float,
    sample_rate: int,
    train: bool,
    rng: np.random.Generator,
    with_audio: bool = True,
) -> tuple[Bucket, dict]:
    """One raw webdataset sample -> (bucket, item) with ``video (3, T, H, W)``, ``audio (1, S)``,
    ``has_audio``, ``caption``, ``fps``, ``meta``. Raises SampleError (bad) or Filtered (no bucket).
    ``with_audio=False`` skips the audio decode (video-only stages): zeros and ``has_audio=False``."""
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise SampleError("bad_json", str(exc)) from exc
    if not isinstance(meta, dict):
        raise SampleError("bad_json", f"not an object: {type(meta).__name__}")
    caption = sample.get("txt", b"").decode("utf-8", errors="replace").strip()
    vkey = next((k for k in VIDEO_KEYS if k in sample), None)
    ikey = next((k for k in IMAGE_KEYS if k in sample), None)
    audio = None
    if vkey is not None:
        data = sample[vkey]
        try:
            vr = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
            stamps = vr.get_frame_timestamp(range(len(vr)))  # (n, 2) start and end seconds of each frame
        except Exception as exc:
            raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from exc
        if len(stamps) == 0:
            raise SampleError("decode_error", "no frames")
        width, height = int(meta.get("width", 0)), int(meta.get("height", 0))
        if not width or not height:
            height, width = vr[0].shape[:2]
        starts, end = stamps[:, 0].astype(np.float64), float(stamps[-1, 1])
        bucket = spec.assign(width, height, end - starts[0], fps, is_image=len(stamps) == 1, rng=rng)
        window = bucket.num_frames / fps
        candidates = starts[starts <= end - window + 1e-6]
        t0 = float(candidates[rng.integers(len(candidates))] if train else starts[0])
        try:
            frames = vr.get_batch(window_indices(starts, t0, bucket.num_frames, fps).tolist()).asnumpy()
            audio = load_audio_window(data, t0, window, sample_rate) if with_audio else None
        except Exception as exc:
            raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from exc
    elif ikey is not None:
        try:
            frames = np.asarray(Image.open(io.BytesIO(sample[ikey])).convert("RGB"))[None]
        except Exception as exc:
            raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from exc
        t0, bucket = 0.0, spec.assign(frames.shape[2], frames.shape[1], 1 / fps, fps, is_image=True, rng=rng)
    else:
        raise SampleError("no_media", f"keys {sorted(k for k in sample if not k.startswith('__'))}")
    n_audio = round(bucket.num_frames / fps * sample_rate)
    video = resize_crop(frames, bucket.height, bucket.width, rng if train else None)
    meta = {**meta, "key": sample.get("__key__"), "url": sample.get("__url__"), "window_start": t0}
    item = {
        "video": video,
        "audio": audio if audio is not None else torch.zeros(1, n_audio),
        "has_audio": audio is not None,
        "caption": caption,
        "fps": float(fps),
        "meta": meta,
    }
    return bucket, item


def collate_av(items: list[dict]) -> dict:
    """Stack items of one bucket: tensors along a new batch dim, strings and metas into lists."""
    return {
        "video": torch.stack([it["video"] for it in items]),  # (B, 3, T, H, W)
        "audio": torch.stack([it["audio"] for it in items]),  # (B, 1, S)
        "has_audio": torch.tensor([it["has_audio"] for it in items], dtype=torch.bool),
        "fps": torch.tensor([it["fps"] for it in items], dtype=torch.float32),
        "caption": [it["caption"] for it in items],
        "meta": [it["meta"] for it in items],
    }


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Brace patterns (``shard-{000000..000009}.tar``), local globs (``shards/*.tar``, sorted), ``::``-joined
    lists, ``pipe:`` commands, lists."""
    given = [urls] if isinstance(urls, str) else [str(u) for u in urls]
    out = []
    for url in given:
        for u in wds.shardlists.expand_urls(url):
            local_glob = not u.startswith(("pipe:", "http://", "https://", "s3://", "gs://")) and any(
                c in u for c in "*?["
            )
            out.extend(sorted(glob.glob(u)) if local_glob else [u])
    if not out:
        raise ValueError(f"urls: no shards in {urls!r}")
    return out


class ShardStream(IterableDataset):
    """Shards -> shuffled raw samples -> ``decode(sample, rng=...) -> (bucket, item)`` -> per-bucket batches.

    Shards are shuffled per epoch (same order on every rank) and split by rank, then by DataLoader worker (by
    sample index when there are fewer shards than consumers); ``resampled=True`` draws shards with replacement
    forever (seeded per rank and worker), so ``epoch_samples`` (per rank) bounds an epoch. ``epoch`` and
    ``resume`` (``{(rank, worker): raw samples to skip}``) are set by the loader before each iteration.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        decode: Callable[..., tuple[Hashable, dict]],
        batch_size: Callable[[Hashable], int],
        collate: Callable[[list[dict]], dict],
        *,
        train: bool = True,
        shuffle_buffer: int = 0,
        shard_shuffle: bool = True,
        resampled: bool = False,
        epoch_samples: int | None = None,
        drop_partial: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.urls = expand_urls(urls)
        self.decode, self.batch_size, self.collate = decode, batch_size, collate
        self.train, self.shuffle_buffer, self.shard_shuffle = train, int(shuffle_buffer), shard_shuffle
        self.resampled, self.epoch_samples, self.drop_partial = resampled, epoch_samples, drop_partial
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch, self.resume, self.replay, self.worker_offset = 0, {}, {}, 0

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        # The loader takes batches from its workers in turn, from process 0: on resume process i plays worker
        # (i + worker_offset) % n, so the turn continues with the worker after the last one consumed.
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (worker + self.worker_offset) % workers
        skip = int(self.resume.get((self.rank, worker), 0))
        return self._batches(self.epoch, worker, workers, skip, set(self.replay.get((self.rank, worker), ())))

    def _shards(self, epoch: int, consumer: int, consumers: int) -> tuple[Iterator[str], int, int]:
        """This consumer's shard urls, and (stride, offset) of the sample-level split when shards are few."""
        if self.resampled:
            rng = random.Random(f"{self.seed}/{epoch}/{consumer}")
            return (rng.choice(self.urls) for _ in iter(int, 1)), 1, 0
        urls = list(self.urls)
        if self.shard_shuffle and self.train:
            random.Random(f"{self.seed}/{epoch}").shuffle(urls)
        if len(urls) < consumers:
            return iter(urls), consumers, consumer
        return islice(urls, consumer, None, consumers), 1, 0

    def _batches(
        self, epoch: int, worker: int, workers: int, skip: int, replay: set[int] = frozenset()
    ) -> Iterator[dict]:
        """``skip``: raw samples consumed before a resume, not decoded again except ``replay`` (the stream
        positions of the samples that waited in a not-yet-full bucket)."""
        consumer, consumers = self.rank * workers + worker, self.world_size * workers
        urls, stride, offset = self._shards(epoch, consumer, consumers)
        skipped: Counter = Counter()
        filtered = 0

        def handler(exn: Exception) -> bool:
            skipped["shard_error"] += 1
            log.warning("skipping shard data: %s", exn)
            return True

        samples = wds.tarfile_samples(({"url": u} for u in urls), handler=handler)
        if stride > 1:
            samples = islice(samples, offset, None, stride)
        samples = self._shuffle(samples, random.Random(f"{self.seed}/{epoch}/{consumer}/shuffle"))
        quota = None if self.epoch_samples is None else math.ceil(self.epoch_samples / workers)  # per rank
        pending: dict[Hashable, list[dict]] = defaultdict(list)
        waiting: dict[Hashable, list[int]] = defaultdict(list)  # stream positions of the pending items
        position = 0
        for sample in samples:
            if quota is not None and position >= quota:
                break
            position += 1
            if position <= skip and position not in replay:
                continue  # consumed before the checkpoint: not decoded again
            rng = np.random.default_rng([self.seed, epoch, consumer, position])
            try:
                key, item = self.decode(sample, rng=rng)
            except Filtered:
                filtered += 1
                continue
            except Exception as exc:  # noqa: BLE001 - bad samples are counted, never raised
                reason = exc.reason if isinstance(exc, SampleError) else "decode_error"
                skipped[reason] += 1
                log.warning("skipping %s in %s: %s", sample.get("__key__"), sample.get("__url__"), exc)
                continue
            pending[key].append(item)
            waiting[key].append(position)
            if len(pending[key]) >= self.batch_size(key):
                waiting.pop(key)
                yield self._emit(pending.pop(key), worker, epoch, position, skipped, filtered, waiting)
                skipped, filtered = Counter(), 0
        if not self.drop_partial:
            for key in list(pending):
                waiting.pop(key)
                yield self._emit(pending.pop(key), worker, epoch, position, skipped, filtered, waiting)
                skipped, filtered = Counter(), 0
        if skipped or filtered:  # counts after the last batch: absorbed by StreamLoader, never reach a model
            yield {"_stats": {"stats_only": True, "skipped": dict(skipped), "filtered": filtered}}

    def _emit(
        self,
        items: list[dict],
        worker: int,
        epoch: int,
        position: int,
        skipped: Counter,
        filtered: int,
        waiting: Mapping[Hashable, list[int]],
    ) -> dict:
        batch = self.collate(items)
        batch["_stats"] = {
            "rank": self.rank,
            "worker": worker,
            "epoch": epoch,
            "position": position,
            "waiting": sorted(p for positions in waiting.values() for p in positions),
            "skipped": dict(skipped),
            "filtered": filtered,
        }
        return batch

    def _shuffle(self, samples: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if self.shuffle_buffer <= 1 or not self.train:
            yield from samples
            return
        buffer: list[dict] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer


@dataclass
class StreamProgress:
    """Main-process bookkeeping: what was consumed (for resume) and what was skipped (for the logs)."""

    epoch: int = 0
    positions: dict = field(default_factory=dict)  # {(rank, worker): raw samples pulled by the last batch}
    waiting: dict = field(default_factory=dict)  # {(rank, worker): stream positions in not-yet-full buckets}
    samples_consumed: int = 0
    skipped: Counter = field(default_factory=Counter)
    filtered: int = 0
    started: bool = False
    resume_pending: bool = False
    yielded: int = 0
    consumed: int = 0
    exhausted: bool = False
    next_worker: int = 0  # the worker whose batch comes next (after the last consumed batch's worker)

    def start_iteration(self) -> tuple[int, dict]:
        if self.resume_pending:
            self.resume_pending = False
        elif self.started:
            self.epoch, self.positions, self.waiting, self.next_worker = self.epoch + 1, {}, {}, 0
        self.started, self.yielded, self.consumed, self.exhausted = True, 0, 0, False
        return self.epoch, dict(self.positions)

    def absorb(self, stats: dict) -> None:
        """Add a worker's skip / filter counts."""
        self.skipped.update(stats["skipped"])
        self.filtered += stats["filtered"]

    def record(self, batch: dict, train: bool = True) -> dict:
        """Pop ``batch["_stats"]`` and account for the batch (call once per batch actually used)."""
        stats = batch.pop("_stats", None)
        if stats is None:
            return batch
        self.absorb(stats)
        if not train:  # validation: counts only, nothing to resume
            return batch
        self.positions[(stats["rank"], stats["worker"])] = stats["position"]
        self.waiting[(stats["rank"], stats["worker"])] = list(stats.get("waiting", []))
        self.next_worker = stats["worker"] + 1
        self.samples_consumed += len(batch["caption"])
        self.consumed += 1
        return batch


class StreamLoader(DataLoader):
    """A DataLoader over a :class:`ShardStream` that sets the epoch and resume point at each ``iter()``.

    ``auto_record()`` says whether batches are recorded as they are yielded (outside Lightning); under a
    Trainer the DataModule records them in ``on_before_batch_transfer`` instead (after Lightning's prefetch).
    """

    def __init__(
        self,
        dataset: ShardStream,
        progress: StreamProgress,
        auto_record: Callable[[], bool],
        train: bool = True,
        **kwargs,
    ) -> None:
        # Batches arrive collated: the default per-sample `default_convert` would walk every sample's meta
        # (the synthetic world's per-frame ground truth: ~3 ms per clip, measured) for nothing.
        kwargs.setdefault("collate_fn", _as_is)
        super().__init__(dataset, batch_size=None, **kwargs)
        self.progress, self.auto_record, self.train = progress, auto_record, train

    def __iter__(self) -> Iterator[dict]:
        epoch, resume = self.progress.start_iteration()
        if self.train:  # validation always reads epoch 0: the same windows every time
            self.dataset.epoch, self.dataset.resume = epoch, resume
            self.dataset.replay = dict(self.progress.waiting)
            self.dataset.worker_offset = self.progress.next_worker % max(1, self.num_workers)
        return self._recorded(super().__iter__(), self.progress)

    def _recorded(self, it: Iterator[dict], p: StreamProgress) -> Iterator[dict]:
        for batch in it:
            if batch.get("_stats", {}).get("stats_only"):
                p.absorb(batch["_stats"])
                continue
            p.yielded += 1
            yield p.record(batch, self.train) if self.auto_record() else batch
        p.exhausted = True


def _as_is(batch: dict) -> dict:
    return batch


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)  # one decode per core: workers must not oversubscribe with intra-op threads


class StreamingDataModule(L.LightningDataModule):
    """Shared streaming machinery: loaders over :class:`ShardStream`, skip counters, resumable state.

    Subclasses implement ``_decoder(train) -> (decode(sample, rng=...), batch_size(bucket), collate(items))``.
    """

    def __init__(
        self,
        train_urls: str | Sequence[str] | None,
        val_urls: str | Sequence[str] | None = None,
        *,
        num_workers: int = 2,
        shuffle_buffer: int = 256,
        shard_shuffle: bool = True,
        resampled: bool = False,
        epoch_samples: int | None = None,
        val_samples: int | None = None,
        drop_partial: bool = True,
        seed: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__()
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        for name, value in (("epoch_samples", epoch_samples), ("val_samples", val_samples)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")
        if resampled and epoch_samples is None:
            log.warning("resampled=True without epoch_samples: the training epoch never ends (set max_steps)")
        self.train_urls, self.val_urls = train_urls, val_urls
        self.num_workers, self.shuffle_buffer, self.shard_shuffle = num_workers, shuffle_buffer, shard_shuffle
        self.resampled, self.epoch_samples, self.val_samples = resampled, epoch_samples, val_samples
        self.drop_partial, self.seed = drop_partial, seed
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.progress, self.val_progress = StreamProgress(), StreamProgress()

    def _decoder(self, train: bool) -> tuple[Callable, Callable, Callable]:
        raise NotImplementedError

    @property
    def skipped(self) -> Counter:
        """Bad training samples skipped so far, by reason (validation: ``val_progress.skipped``)."""
        return self.progress.skipped

    def rank_and_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)

    def _loader(self, urls: str | Sequence[str], train: bool) -> StreamLoader:
        decode, batch_size, collate = self._decoder(train)
        rank, world = self.rank_and_world()
        stream = ShardStream(
            urls,
            decode,
            batch_size,
            collate,
            train=train,
            shuffle_buffer=self.shuffle_buffer,
            shard_shuffle=self.shard_shuffle,
            resampled=self.resampled and train,
            epoch_samples=self.epoch_samples if train else self.val_samples,
            drop_partial=self.drop_partial and train,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        extra = {"prefetch_factor": self.prefetch_factor} if self.num_workers > 0 else {}
        return StreamLoader(
            stream,
            self.progress if train else self.val_progress,
            lambda: self.trainer is None,
            train=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=_init_worker,
            **extra,
        )

    def train_dataloader(self) -> StreamLoader:
        if not self.train_urls:
            raise ValueError("train_urls is not set")
        return self._loader(self.train_urls, train=True)

    def val_dataloader(self) -> StreamLoader | list:
        return self._loader(self.val_urls, train=False) if self.val_urls else []

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        training = self.trainer is None or self.trainer.training
        return (self.progress if training else self.val_progress).record(batch, training)

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        """Move the tensors; leave ``meta`` (plain JSON per sample, e.g. the synthetic world's per-frame
        ground truth) alone: Lightning's generic walk over it cost ~45 ms per step of the tiny VAE."""
        if isinstance(batch, dict) and "meta" in batch:
            rest = super().transfer_batch_to_device(
                {k: v for k, v in batch.items() if k != "meta"}, device, dataloader_idx
            )
            return {**rest, "meta": batch["meta"]}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def state_dict(self) -> dict:
        """Resume state, gathered from every rank when torch.distributed runs (so call it on all ranks, as
        Lightning does when it saves a checkpoint)."""
        p = self.progress
        done = p.started and p.exhausted and p.consumed == p.yielded
        rank, world = self.rank_and_world()
        positions = [] if done else [[r, w, n] for (r, w), n in sorted(p.positions.items())]
        local = {
            "rank": rank,
            "epoch": p.epoch + 1 if done else p.epoch,
            "positions": positions,
            "next_worker": 0 if done else p.next_worker,
            "waiting": [] if done else [[r, w, list(n)] for (r, w), n in sorted(p.waiting.items()) if n],
            "samples_consumed": p.samples_consumed,
            "skipped": dict(p.skipped),
            "filtered": p.filtered,
        }
        states = [local]
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * world
            torch.distributed.all_gather_object(states, local)
        return {"version": 1, "world_size": world, "num_workers": self.num_workers, "ranks": states}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next training iteration skips what each worker had consumed (see module docstring)."""
        rank, world = self.rank_and_world()
        ranks = {s["rank"]: s for s in state["ranks"]}
        mine = ranks.get(rank, state["ranks"][0])
        positions = {(r, w): n for s in state["ranks"] for r, w, n in s["positions"]}
        same = (state["world_size"], state["num_workers"], len(ranks)) == (world, self.num_workers, world)
        if not same:
            each = sum(positions.values()) // (world * max(1, self.num_workers))
            log.warning(
                "data resume: ranks x workers changed (%s x %s -> %s x %s); each worker skips %d "
                "samples (approximate)",
                state["world_size"],
                state["num_workers"],
                world,
                self.num_workers,
                each,
            )
            positions = {(rank, w): each for w in range(max(1, self.num_workers))} if each else {}
        p = self.progress
        p.epoch, p.positions = int(mine["epoch"]), positions
        p.next_worker = int(mine.get("next_worker", 0)) if same else 0
        waiting = {(r, w): list(n) for s in state["ranks"] for r, w, n in s.get("waiting", [])}
        p.waiting = waiting if same else {}
        p.samples_consumed = int(mine["samples_consumed"])
        p.skipped, p.filtered = Counter(mine["skipped"]), int(mine["filtered"])
        p.resume_pending, p.started = True, True


class VideoDataModule(StreamingDataModule):
    """Bucketed video+audio batches from webdataset shards (see the module docstring for the batch layout).

    Args:
        train_urls / val_urls: shard paths, brace patterns, ``pipe:`` commands or lists of them.
        buckets: ``{resolution: {num_frames: [keep_prob, batch_size or null]}}`` (see :class:`BucketSpec`).
        val_buckets: the same for validation; ``None`` uses ``buckets`` (e.g. a VAE trains on short windows
            and is measured on long ones).
        aspect_ratios: bucket width / height ratios. fps: target frame rate (frames picked by timestamp).
        sample_rate: audio rate of the batches (mono). with_audio: False skips audio decoding (video-only
            stages such as VAE training): zeros and ``has_audio=False``. max_tokens: batch size of ``null``
            entries.
        The streaming arguments are those of :class:`StreamingDataModule`.
    """

    def __init__(
        self,
        train_urls: str | Sequence[str] | None = None,
        val_urls: str | Sequence[str] | None = None,
        *,
        buckets: Mapping,
        val_buckets: Mapping | None = None,
        aspect_ratios: Sequence[float] = (1.0,),
        fps: float = 24.0,
        sample_rate: int = 16000,
        with_audio: bool = True,
        size_multiple: int = 16,
        max_tokens: int | None = None,
        temporal_compression: int = 4,
        spatial_compression: int = 16,
        **stream_kwargs,
    ) -> None:
        super().__init__(train_urls, val_urls, **stream_kwargs)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
        bucket_args = (aspect_ratios, size_multiple, max_tokens, temporal_compression, spatial_compression)
        self.spec = BucketSpec(buckets, *bucket_args)
        self.val_spec = self.spec if val_buckets is None else BucketSpec(val_buckets, *bucket_args)
        self.fps, self.sample_rate, self.with_audio = float(fps), int(sample_rate), with_audio

    def _decoder(self, train: bool) -> tuple[Callable, Callable, Callable]:
        spec = self.spec if train else self.val_spec
        decode = partial(
            decode_av_sample,
            spec=spec,
            fps=self.fps,
            sample_rate=self.sample_rate,
            train=train,
            with_audio=self.with_audio,
        )
        return decode, spec.batch_size, collate_av


class DataStatsCallback(L.Callback):
    """Logs ``data/skipped`` (bad samples), ``data/filtered`` and ``data/samples_consumed`` every step."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict, batch_idx: int
    ) -> None:
        dm = trainer.datamodule
        if isinstance(dm, StreamingDataModule):
            p = dm.progress
            stats = {
                "data/skipped": float(sum(p.skipped.values())),
                "data/filtered": float(p.filtered),
                "data/samples_consumed": float(p.samples_consumed),
            }
            pl_module.log_dict(stats, on_step=True, on_epoch=False)
