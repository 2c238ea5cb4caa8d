"""Streaming video+audio DataModule on webdataset shards, with aspect-ratio x duration buckets.

A sample (``mp4`` or ``jpg``/``png`` bytes, ``json`` metadata, ``txt`` caption) goes to a bucket chosen from
its json (aspect ratio, size, duration). Buckets are given Open-Sora 2.0 style,
``{resolution: {num_frames: [keep_prob, batch_size]}}`` (``batch_size: null`` = ``max_tokens`` // latent
tokens), times a list of aspect ratios. Each worker keeps one list per bucket and yields a batch when a list
is full, so a batch never mixes shapes. Batches are dicts::

    video (B, 3, T, H, W) float in [-1, 1]    audio (B, 1, S) in [-1, 1], S = round(T / fps * sample_rate)
    has_audio (B,) bool   caption list[str]   fps (B,) float   meta list[dict] (json, key, url, window_start)

Bad samples (undecodable media, bad json, corrupt or truncated tar data, missing shards) are skipped, logged
and counted by reason; the counts travel with the worker's next batch (``batch["_stats"]``, or a stats-only
message after its last batch that the loader absorbs) and are summed in ``DataModule.skipped`` when the batch
is recorded (``on_before_batch_transfer`` under Lightning, at iteration outside it).
:class:`DataStatsCallback` (on in the default callback configs) logs them. Good samples that no bucket
takes are counted apart (``filtered``). Shards with no usable sample end the run with
:class:`NoUsableSamplesError`.

This module is the public face; the pieces live in files named for what they hold:

- :mod:`data_pipelines.buckets`: :class:`BucketSpec`, :class:`Bucket` (which batch shape a sample gets);
- :mod:`data_pipelines.av_samples`: :func:`decode_av_sample`, :func:`collate_av` (bytes -> tensors);
- :mod:`data_pipelines.shard_reader`: :func:`expand_urls`, :func:`read_shard` (tar -> counted samples);
- :mod:`data_pipelines.shard_stream`: :class:`ShardStream` (shuffle, split by rank/worker, batch by bucket);
- :mod:`data_pipelines.stream_loader`: :class:`StreamLoader`, :class:`StreamProgress` (epochs, resume);
- :mod:`data_pipelines.datamodules`: :class:`StreamingDataModule`, :class:`VideoDataModule` (resume state);
- :mod:`data_pipelines.data_stats`: :class:`DataStatsCallback`;
- :mod:`data_pipelines.sample_errors`: :class:`SampleError`, :class:`Filtered`, :class:`NoUsableSamplesError`.
"""

from __future__ import annotations

from data_pipelines.av_samples import (
    IMAGE_KEYS,
    VIDEO_KEYS,
    collate_av,
    decode_av_sample,
    load_audio_window,
    resize_crop,
    window_indices,
)
from data_pipelines.buckets import Bucket, BucketSpec, resolution_area
from data_pipelines.data_stats import DataStatsCallback
from data_pipelines.datamodules import StreamingDataModule, VideoDataModule
from data_pipelines.sample_errors import Filtered, NoUsableSamplesError, SampleError
from data_pipelines.shard_reader import expand_urls, read_shard, read_shards
from data_pipelines.shard_stream import ShardStream
from data_pipelines.stream_loader import StreamLoader, StreamProgress, init_worker

_init_worker = init_worker  # the old private name, still imported by older code

__all__ = [
    "IMAGE_KEYS",
    "VIDEO_KEYS",
    "Bucket",
    "BucketSpec",
    "DataStatsCallback",
    "Filtered",
    "NoUsableSamplesError",
    "SampleError",
    "ShardStream",
    "StreamLoader",
    "StreamProgress",
    "StreamingDataModule",
    "VideoDataModule",
    "collate_av",
    "decode_av_sample",
    "expand_urls",
    "init_worker",
    "load_audio_window",
    "read_shard",
    "read_shards",
    "resize_crop",
    "resolution_area",
    "window_indices",
]
