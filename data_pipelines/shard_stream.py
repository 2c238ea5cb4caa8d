"""Shards -> shuffled raw samples -> decoded items -> per-bucket batches, split over ranks and workers.

Every loss is counted by reason (the shard reader's ``shard_error`` / ``corrupt_tar`` / ``truncated_tar``,
the decoder's ``decode_error`` / ``bad_json`` / ``no_media``) and travels with the worker's next batch; the
first :data:`LOGGED_SKIPS` skips of each reason are logged one line each, later ones at 100, 1000, 10000...
so a bad dataset cannot flood the log. Events that are not losses (e.g. which caption form a sample got,
:mod:`data_pipelines.caption_forms`) ride on the items as ``_counts`` and are summed per emitted batch into
``batch["_stats"]["counts"]``: they count the samples of the batches actually emitted, so a sample replayed
after a resume (it waited in a bucket at checkpoint time) is counted once. A stream with no usable sample
ends with :class:`~data_pipelines.sample_errors.NoUsableSamplesError` (see :class:`StallWatch`) instead of
spinning; a :class:`~data_pipelines.sample_errors.StreamConfigError` from a decoder (the settings cannot read
the shards at all) stops the stream at once.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from itertools import islice

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from data_pipelines.sample_errors import Filtered, NoUsableSamplesError, SampleError, StreamConfigError
from data_pipelines.shard_reader import expand_urls, read_shards

log = logging.getLogger(__name__)

LOGGED_SKIPS = 10  # per reason and worker: one log line each; then one line per power of ten


class SkipLog:
    """Counts skipped samples by reason and logs them without flooding: the first :data:`LOGGED_SKIPS` of
    each reason one line each, then one line at every power of ten."""

    def __init__(self, prefix: str = "skipping") -> None:
        self.prefix = prefix
        self.total: Counter = Counter()  # since the stream started
        self.pending: Counter = Counter()  # since the last batch (sent with it)

    def __call__(self, reason: str, where: str, message: str) -> None:
        self.total[reason] += 1
        self.pending[reason] += 1
        n = self.total[reason]
        if n <= LOGGED_SKIPS:
            log.warning("%s %s (%s): %s", self.prefix, where, reason, message)
        elif n == LOGGED_SKIPS + 1 or math.log10(n).is_integer():
            log.warning(
                "%s: %d samples skipped as %s so far (latest: %s: %s); further ones are counted and logged "
                "at every power of ten",
                self.prefix,
                n,
                reason,
                where,
                message,
            )

    def take(self) -> Counter:
        """The counts since the last call."""
        out, self.pending = self.pending, Counter()
        return out


class StallWatch:
    """Ends a resampled stream (shards drawn forever) once it cannot produce a usable sample any more.

    Since the last usable sample: when every shard has been drawn at least once and every sample read from
    those draws has been decoded without a usable one, no further draw can do better (a shard reads the same
    every time), so :meth:`check` raises instead of spinning. A sample skipped by a resume, or filtered only
    by a ``keep_prob`` draw, counts as usable (another draw may keep it).
    """

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = set(urls)
        self.tried: set[str] = set()
        self.draw = -1
        self.cover_draw: int | None = None  # the draw that completed ``tried``
        self.outstanding: Counter = Counter()  # draw -> samples read but not yet decoded

    def drawing(self, url: str) -> int:
        self.draw += 1
        self.tried.add(url)
        if self.cover_draw is None and self.tried == self.urls:
            self.cover_draw = self.draw
        return self.draw

    def read(self, draw: int) -> None:
        self.outstanding[draw] += 1

    def decoded(self, draw: int, usable: bool) -> None:
        self.outstanding[draw] -= 1
        if not self.outstanding[draw]:
            del self.outstanding[draw]
        if usable:
            self.tried, self.cover_draw = set(), None

    def stalled(self) -> bool:
        cover = self.cover_draw
        return cover is not None and self.draw > cover and all(d > cover for d in self.outstanding)


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
        skips = SkipLog()
        filtered, filtered_total = 0, 0
        watch = StallWatch(self.urls) if self.resampled else None

        def stalled() -> NoUsableSamplesError:
            shards = ", ".join(sorted(self.urls)[:3]) + (", ..." if len(self.urls) > 3 else "")
            return NoUsableSamplesError(
                f"no usable sample in any of the {len(self.urls)} shards ({shards}): every shard was read "
                f"and every sample skipped or filtered (rank {self.rank}, worker {worker}: skipped "
                f"{dict(skips.total)}, filtered {filtered_total} (no bucket takes them)); check the shards "
                "and the buckets"
            )

        def drawn(urls: Iterator[str]) -> Iterator[str]:
            for url in urls:
                if watch is not None:
                    if watch.stalled():
                        raise stalled()
                    current[0] = watch.drawing(url)
                yield url

        def tagged(samples: Iterator[dict]) -> Iterator[dict]:
            for sample in samples:
                if watch is not None:
                    sample["__draw__"] = current[0]
                    watch.read(current[0])
                yield sample

        current = [0]
        samples = tagged(read_shards(drawn(urls), skips))
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
            draw = sample.pop("__draw__", None)
            if position <= skip and position not in replay:  # consumed before the checkpoint: not decoded
                if watch is not None:
                    watch.decoded(draw, usable=True)
                continue
            rng = np.random.default_rng([self.seed, epoch, consumer, position])
            usable = False
            try:
                key, item = self.decode(sample, rng=rng)
                usable = True
            except Filtered as exc:
                filtered += 1
                filtered_total += 1
                usable = exc.by_chance
                continue
            except StreamConfigError:  # the settings, not the sample: stop, never count every sample
                raise
            except Exception as exc:  # noqa: BLE001 - bad samples are counted, never raised
                reason = exc.reason if isinstance(exc, SampleError) else "decode_error"
                skips(reason, f"{sample.get('__url__')}:{sample.get('__key__')}", str(exc))
                continue
            finally:
                if watch is not None:
                    watch.decoded(draw, usable)
                    if not usable and watch.stalled():
                        raise stalled()
            pending[key].append(item)
            waiting[key].append(position)
            if len(pending[key]) >= self.batch_size(key):
                waiting.pop(key)
                yield self._emit(pending.pop(key), worker, epoch, position, skips.take(), filtered, waiting)
                filtered = 0
        if not self.drop_partial:
            for key in list(pending):
                waiting.pop(key)
                yield self._emit(pending.pop(key), worker, epoch, position, skips.take(), filtered, waiting)
                filtered = 0
        skipped = skips.take()
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
        counts: Counter = Counter()  # per-item events of the samples in this batch (e.g. caption forms)
        for item in items:
            counts.update(item.pop("_counts", {}))
        batch = self.collate(items)
        batch["_stats"] = {
            "rank": self.rank,
            "worker": worker,
            "epoch": epoch,
            "position": position,
            "waiting": sorted(p for positions in waiting.values() for p in positions),
            "skipped": dict(skipped),
            "filtered": filtered,
            "counts": dict(counts),
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
