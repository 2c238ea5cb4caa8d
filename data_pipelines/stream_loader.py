"""Main-process side of a stream: the loader that sets each epoch's resume point, and the bookkeeping of what
was consumed (for resume) and skipped (for the logs)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from data_pipelines.sample_errors import NoUsableSamplesError
from data_pipelines.shard_stream import ShardStream

log = logging.getLogger(__name__)


@dataclass
class StreamProgress:
    """Main-process bookkeeping: what was consumed (for resume) and what was skipped (for the logs)."""

    epoch: int = 0
    positions: dict = field(default_factory=dict)  # {(rank, worker): raw samples pulled by the last batch}
    waiting: dict = field(default_factory=dict)  # {(rank, worker): stream positions in not-yet-full buckets}
    samples_consumed: int = 0
    skipped: Counter = field(default_factory=Counter)
    filtered: int = 0
    counts: Counter = field(default_factory=Counter)  # per-sample events of consumed batches (caption forms)
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
        """Add a worker's skip / filter counts and the batch's event counts."""
        self.skipped.update(stats["skipped"])
        self.filtered += stats["filtered"]
        self.counts.update(stats.get("counts", {}))

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
        return self._recorded(super().__iter__(), self.progress, epoch, resumed=bool(resume))

    def _recorded(self, it: Iterator[dict], p: StreamProgress, epoch: int, resumed: bool) -> Iterator[dict]:
        skipped, filtered = Counter(), 0  # this epoch's, for the message below
        for batch in it:
            stats = batch.get("_stats", {})
            skipped.update(stats.get("skipped", {}))
            filtered += stats.get("filtered", 0)
            if stats.get("stats_only"):
                p.absorb(stats)
                continue
            p.yielded += 1
            yield p.record(batch, self.train) if self.auto_record() else batch
        p.exhausted = True
        if p.yielded == 0 and not resumed:  # a resumed epoch may have had only a partial batch left
            urls = self.dataset.urls
            shards = ", ".join(urls[:3]) + (", ..." if len(urls) > 3 else "")
            message = (
                f"{'training' if self.train else 'validation'} epoch {epoch} produced no batch from "
                f"{len(urls)} shards ({shards}): skipped {dict(skipped)}, filtered {filtered} (no bucket "
                "takes them); check the shards, the buckets and the batch sizes"
            )
            if self.train:  # Lightning would start the next empty epoch, forever
                raise NoUsableSamplesError(message)
            log.error(message)


def _as_is(batch: dict) -> dict:
    return batch


def init_worker(_: int) -> None:
    torch.set_num_threads(1)  # one decode per core: workers must not oversubscribe with intra-op threads
