"""Lightning DataModules over webdataset shards: the shared streaming machinery and the video+audio one.

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

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import lightning as L
import torch

from data_pipelines.av_samples import collate_av, decode_av_sample
from data_pipelines.buckets import BucketSpec
from data_pipelines.caption_forms import CaptionMix
from data_pipelines.shard_stream import ShardStream
from data_pipelines.stream_loader import StreamLoader, StreamProgress, init_worker

log = logging.getLogger(__name__)


class StreamingDataModule(L.LightningDataModule):
    """Shared streaming machinery: loaders over :class:`ShardStream`, skip counters, resumable state.

    Subclasses implement ``_decoder(train) -> (decode(sample, rng=...), batch_size(bucket), collate(items))``
    and hand ``caption_mix`` to their decoder.

    ``caption_keys``: ``{form: probability}`` caption forms mixed per sample (``txt`` = the sample's txt, any
    other name = its json ``captions[name]``; a sample without the drawn form gets its txt and is counted as
    ``caption_form_missing``), or None for the txt alone; see :mod:`data_pipelines.caption_forms`.
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
        caption_keys: Mapping[str, float] | None = None,
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
        self.caption_mix = CaptionMix.from_config(caption_keys)  # None: the txt, as before
        self.progress, self.val_progress = StreamProgress(), StreamProgress()

    def _decoder(self, train: bool) -> tuple[Callable, Callable, Callable]:
        raise NotImplementedError

    @property
    def skipped(self) -> Counter:
        """Bad training samples skipped so far, by reason (validation: ``val_progress.skipped``)."""
        return self.progress.skipped

    def rank_and_world(self) -> tuple[int, int]:
        """This process's data-parallel rank and size: the ranks of one sequence-parallel group read the same
        samples (sora.training.parallel)."""
        if self.trainer is not None:
            from sora.training.parallel import data_parallel_rank_and_world

            return data_parallel_rank_and_world(self.trainer)
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
            worker_init_fn=init_worker,
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
            "counts": dict(p.counts),
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
        p.counts = Counter(mine.get("counts", {}))  # absent in checkpoints written before caption_keys
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
            caption_mix=self.caption_mix,
        )
        return decode, spec.batch_size, collate_av
