"""Latent cache: shards -> latent shards with trained VAEs, and a DataModule that reads them back.

``python -m data_pipelines.latents shards='/data/s/shard-{000000..000099}.tar' out_dir=/data/lat
vae.video=outputs/vae_video_tiny/checkpoints/last.ckpt
vae.audio=outputs/vae_audio_tiny/checkpoints/last.ckpt``
(or :func:`encode_shards` with ``nn.Module`` objects from Python). A VAE training checkpoint of this project
(``train.py experiment=vae_*``) carries the network's config, its EMA weights and its latent statistics, so
nothing else is needed (:func:`sora.checkpoint.load_network_from_checkpoint`); ``.safetensors`` weights (or a
foreign ``.ckpt``) need the constructor arguments in ``vae.video_model`` / ``vae.audio_model``. Every network
is built by :func:`sora.checkpoint.build_module`, the project's one safe loader: a ``_target_`` must be one of
the project's networks (:data:`sora.checkpoint.ALLOWED_TARGETS`), whatever the config or checkpoint says.

Per input shard ``i`` (in the order given) one output shard ``shard-%06d.tar`` holds, per sample:
``video_latent.npy`` ``(C, t, h, w)`` and ``audio_latent.npy`` ``(C, L)``: the RAW posterior MEAN by
default (``mode=sample`` stores one reparameterised sample; ``normalize=True`` applies the VAE's
``normalize_latents``, but the DiT module whitens cached latents itself when it holds the VAE, so raw is the
default; the json says which); ``text_emb.npy`` ``(N, D)`` + ``text_mask.npy`` ``(N,)`` only when a
FROZEN text encoder (``trainable = False``) is given, since the default word encoder trains with the DiT (then
only the caption is stored), with the encoder's ``fingerprint()`` as ``latent.text_encoder`` (the DiT's step
uses them instead of running its encoder only when its own encoder has that fingerprint); the original json
(plus ``latent: {...}``) and ``txt``. Clips are decoded like validation batches of
:class:`~data_pipelines.dataset.VideoDataModule`: the first window of the most frames in ``buckets`` that
fits, centre crop, audio ``[t0, t0 + T / fps)`` at 16 kHz mono (zeros and ``has_audio = false`` without a
track).

Resumable, atomic and byte-reproducible: shards are written by :mod:`data_pipelines.shard_writer`
(``*.tar.tmp`` renamed when complete, no timestamps: encoding the same shards twice gives the same bytes);
existing outputs are skipped. Nothing is lost silently: input samples that cannot be read (damaged tar data,
undecodable media) are counted by reason in ``latents_report.json`` (``skipped``, and ``losses``: the first
:data:`MAX_LISTED_LOSSES` with shard, sample and message) and summed up in the log. Decoding runs in
DataLoader workers (whole shards per worker, partial batches flushed at each shard's end). Multi-GPU runs
split the shard list by rank (``rank::world_size``, from torch.distributed or the
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables ``torchrun`` sets) with no communication, each rank on
``cuda:LOCAL_RANK`` writing its own ``latents_report.rank<r>.json``. Lightning's predict loop is not used: it
would add nothing to this split.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from data_pipelines.av_samples import collate_av, decode_av_sample
from data_pipelines.buckets import BucketSpec
from data_pipelines.caption_forms import CaptionMix
from data_pipelines.datamodules import StreamingDataModule
from data_pipelines.mirror import MIRROR_SUFFIX, mirror_meta, swap_sides
from data_pipelines.sample_errors import Filtered, SampleError
from data_pipelines.shard_reader import expand_urls, read_shard
from data_pipelines.shard_stream import SkipLog
from data_pipelines.shard_writer import write_shard
from data_pipelines.stream_loader import init_worker
from sora.checkpoint import (
    build_module,
    load_network_from_checkpoint,
    load_safetensors,
    load_torch_checkpoint,
)
from sora.config import CONF_DIR, save_resolved_config

log = logging.getLogger(__name__)

LATENT_KEYS = ("video_latent.npy", "audio_latent.npy", "text_emb.npy", "text_mask.npy")
_NP_DTYPES = {"float32": np.float32, "float16": np.float16}
MAX_LISTED_LOSSES = 1000  # per rank: ``losses`` in the report lists this many; ``skipped`` counts them all


# ------------------------------------------------------------------------------------------ loading VAEs


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a (Lightning) ``.ckpt`` / ``.pt`` (``weights_only=True``)."""
    path = str(path)
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    obj = load_torch_checkpoint(path)
    obj = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(obj).__name__}")
    return obj


def _strip_prefix(sd: dict[str, torch.Tensor], module: nn.Module, prefix: str | None) -> dict:
    """The module's entries of ``sd``: under ``prefix`` if given, else the one prefix covering them all."""
    wanted = set(module.state_dict())
    if prefix is None:
        first = next(iter(wanted))
        candidates = {k[: len(k) - len(first)] for k in sd if k == first or k.endswith("." + first)}
        prefix_ok = [p for p in sorted(candidates) if wanted <= {k[len(p) :] for k in sd if k.startswith(p)}]
        if len(prefix_ok) != 1:
            raise ValueError(
                f"cannot tell which weights belong to {type(module).__name__}: prefixes "
                f"{prefix_ok} cover it; set vae.*_key_prefix"
            )
        prefix = prefix_ok[0]
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix) and k[len(prefix) :] in wanted}


def load_vae(
    model_cfg: Mapping, weights: str | None, *, key_prefix: str | None = None, allow_random_init: bool = False
) -> nn.Module:
    """Build a module from a ``_target_`` config with :func:`sora.checkpoint.build_module` (the project's
    networks only: ``os.system`` or ``sora.some_function`` alike are refused), then load its weights.

    ``weights``: ``.safetensors`` or a Lightning ``.ckpt`` (its ``state_dict``; the key prefix of the VAE
    inside the LightningModule, e.g. ``vae.``, is found automatically or given as ``key_prefix``). Without
    weights the module is only returned when ``allow_random_init`` (smoke tests; modules that load their own
    weights, like ``HFTextEncoder``).
    """
    target = str(model_cfg.get("_target_", ""))
    module = build_module(model_cfg)
    if weights is None:
        if not allow_random_init:
            raise ValueError(
                f"no weights given for {target} (set vae.video / vae.audio to a .safetensors or .ckpt)"
            )
        log.warning("%s: randomly initialised (allow_random_init)", target)
    else:
        module.load_state_dict(_strip_prefix(load_state_dict_file(weights), module, key_prefix), strict=True)
    return module.eval()


def is_network_checkpoint(path: str | os.PathLike, name: str = "vae") -> bool:
    """Whether ``path`` is a project Lightning checkpoint with the network config ``name`` (hyper-parameter).

    The file is memory-mapped (``weights_only=True``), so asking does not read its tensors.
    """
    if str(path).endswith(".safetensors") or not os.path.isfile(path):
        return False
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip-format torch file: not ours; load_vae reports the real error
        return False
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    return isinstance(hparams, Mapping) and isinstance(hparams.get(name), Mapping)


def load_vae_for(
    role: str,
    weights: str | None,
    model_cfg: Mapping | None,
    *,
    key_prefix: str | None = None,
    use_ema: bool = True,
    allow_random_init: bool = False,
) -> nn.Module:
    """The ``role`` ("video" or "audio") VAE: from a project VAE training checkpoint when ``weights`` is one
    (config, EMA weights and latent statistics from the file; ``model_cfg`` is ignored), else
    :func:`load_vae` with ``model_cfg`` (``.safetensors`` or a foreign ``.ckpt``)."""
    if weights is not None and is_network_checkpoint(weights, "vae"):
        net, config = load_network_from_checkpoint(weights, "vae", use_ema=use_ema)
        target = str(config.get("_target_", ""))
        if f"{role}_vae" not in target.rsplit(".", 1)[0]:
            raise ValueError(f"vae.{role}={weights} holds a {target}, not a {role} VAE")
        log.info(
            "latents: %s VAE %s from %s (%s weights)", role, target, weights, "EMA" if use_ema else "raw"
        )
        return net.eval()
    if model_cfg is None:
        raise ValueError(
            f"vae.{role}={weights} is not a VAE training checkpoint: set vae.{role}_model to the "
            "constructor arguments of its weights"
        )
    return load_vae(model_cfg, weights, key_prefix=key_prefix, allow_random_init=allow_random_init)


# ------------------------------------------------------------------------------------------ encoding


class _ShardSamples(IterableDataset):
    """Whole shards per worker -> ``("batch", url, batch)`` ... ``("done", url, stats)`` messages in order."""

    def __init__(self, urls: list[str], decode: Callable, batch_size: int) -> None:
        super().__init__()
        self.urls, self.decode, self.batch_size = urls, decode, batch_size

    def __iter__(self) -> Iterator[tuple[str, str, dict]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        logged = SkipLog("latents: skipping")  # rate-limited log lines, per worker
        for url in self.urls[worker::workers]:
            stats: dict = {"skipped": Counter(), "filtered": 0, "samples": 0, "losses": []}

            def on_skip(reason: str, where: str, message: str, stats: dict = stats) -> None:
                stats["skipped"][reason] += 1
                stats["losses"].append({"reason": reason, "where": where, "message": message[:300]})
                logged(reason, where, message)

            pending: dict[Hashable, list[dict]] = defaultdict(list)
            for sample in read_shard(url, on_skip):
                try:
                    key, item = self.decode(sample, rng=np.random.default_rng(0))
                except Filtered:
                    stats["filtered"] += 1
                    continue
                except Exception as exc:  # noqa: BLE001 - counted, never raised
                    reason = exc.reason if isinstance(exc, SampleError) else "decode_error"
                    on_skip(reason, f"{url}:{sample.get('__key__')}", str(exc))
                    continue
                stats["samples"] += 1
                pending[key].append(item)
                if len(pending[key]) >= self.batch_size:
                    yield "batch", url, collate_av(pending.pop(key))
            for key in list(pending):
                yield "batch", url, collate_av(pending.pop(key))
            # a plain dict: DataLoader's default_convert would double a Counter (copy, then Counter.update)
            yield "done", url, {**stats, "skipped": dict(stats["skipped"])}


def _npy(x: torch.Tensor, dtype: type) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.detach().float().cpu().numpy().astype(dtype))
    return buf.getvalue()


def _latents(
    vae: nn.Module, x: torch.Tensor, mode: str, normalize: bool, generator: torch.Generator
) -> torch.Tensor:
    post = vae.encode(x)
    z = post.mean if mode == "mean" else post.sample(generator)
    return vae.normalize_latents(z) if normalize and hasattr(vae, "normalize_latents") else z


def _dist_env() -> tuple[int, int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return rank, world, int(os.environ.get("LOCAL_RANK", 0))


@torch.no_grad()
def encode_shards(
    video_vae: nn.Module,
    audio_vae: nn.Module | None,
    shards: str | Sequence[str],
    out_dir: str | os.PathLike,
    *,
    text_encoder: nn.Module | None = None,
    buckets: Mapping[str, Sequence[int]],
    aspect_ratios: Sequence[float] = (1.0,),
    fps: float = 24.0,
    sample_rate: int = 16000,
    batch_size: int = 4,
    num_workers: int = 0,
    mode: str = "mean",
    normalize: bool = False,
    dtype: str = "float32",
    device: str = "cpu",
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    mirror: bool = False,
) -> dict:
    """Encode ``shards`` into latent shards under ``out_dir``; returns this rank's report.

    ``buckets``: ``{resolution: [num_frames, ...]}`` (each ``1 + k * temporal_compression``; the most frames
    that fit are used). Video ``(B, 3, T, H, W)`` -> ``video_latent (C, t, h, w)`` per sample, audio
    ``(B, 1, S)`` -> ``audio_latent (C, L)``. The modules are used in eval mode on ``device``.

    ``mirror``: also write each clip's left/right mirror image right after it (key ``<key>_mirror``): the
    flipped video through the VAE, the same (mono) audio latent, the captions and metadata with left and right
    swapped (:mod:`data_pipelines.mirror`); twice the samples for one more video encode per batch. Not with a
    frozen text encoder (its stored embeddings are of the unswapped captions).
    """
    if mirror and text_encoder is not None and not getattr(text_encoder, "trainable", False):
        raise ValueError("encode_shards: mirror=True with a frozen text encoder is not supported")
    if mode not in ("mean", "sample"):
        raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}")
    if dtype not in _NP_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_NP_DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not buckets:
        raise ValueError("buckets: give {resolution: [num_frames, ...]}, e.g. {'64px': [45, 17]}")
    tc = int(getattr(video_vae, "temporal_compression", 1))
    for res, frames in buckets.items():
        if not frames or any((int(t) - 1) % tc for t in frames):
            raise ValueError(
                f"buckets.{res}: num_frames must be 1 + {tc} * k for the video VAE, got {list(frames)}"
            )
    spec = BucketSpec(
        {r: {int(t): [1.0, batch_size] for t in f} for r, f in buckets.items()},
        aspect_ratios,
        size_multiple=int(getattr(video_vae, "spatial_compression", 8)) * 2,
    )
    env_rank, env_world, _ = _dist_env()
    rank, world_size = env_rank if rank is None else rank, env_world if world_size is None else world_size
    urls = expand_urls(shards)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {u: f"shard-{i:06d}.tar" for i, u in enumerate(urls)}
    mine = urls[rank::world_size]
    todo = [u for u in mine if not (out / names[u]).exists()]
    store_text = text_encoder is not None and not getattr(text_encoder, "trainable", False)
    text_id = text_encoder.fingerprint() if store_text and hasattr(text_encoder, "fingerprint") else None
    if text_encoder is not None and not store_text:
        log.info("latents: the text encoder is trainable; storing captions only")
    for m in (video_vae, audio_vae, text_encoder):
        if m is not None:
            m.eval().to(device)
    decode = partial(decode_av_sample, spec=spec, fps=float(fps), sample_rate=int(sample_rate), train=False)
    loader = DataLoader(
        _ShardSamples(todo, decode, batch_size),
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=init_worker,
    )
    np_dtype, t_start = _NP_DTYPES[dtype], time.time()
    pending: dict[str, list] = defaultdict(list)
    report = {
        "rank": rank,
        "world_size": world_size,
        "shards_total": len(mine),
        "shards_skipped": len(mine) - len(todo),
        "shards_written": 0,
        "samples_written": 0,
        "filtered": 0,
        "skipped": Counter(),
        "losses": [],
        "losses_not_listed": 0,
        "mode": mode,
        "normalized": normalize,
        "text_embeddings": store_text,
        "text_encoder": text_id,
        "mirrored": bool(mirror),
        "shards": {},
    }
    bar = tqdm(total=len(todo), desc=f"latents[rank {rank}]", unit="shard")
    for kind, url, payload in loader:
        if kind == "done":
            write_shard(out / names[url], pending.pop(url, []))
            report["shards_written"] += 1
            report["samples_written"] += payload["samples"] * (2 if mirror else 1)
            report["filtered"] += payload["filtered"]
            report["skipped"].update(payload["skipped"])
            room = MAX_LISTED_LOSSES - len(report["losses"])
            report["losses"] += payload["losses"][:room]
            report["losses_not_listed"] += len(payload["losses"][room:])
            report["shards"][names[url]] = url
            bar.update(1)
            continue
        keys = [m["key"] for m in payload["meta"]]
        gen = torch.Generator(device).manual_seed(seed + zlib.crc32(keys[0].encode()))
        video = payload["video"].to(device)  # (B, 3, T, H, W)
        zv = _latents(video_vae, video, mode, normalize, gen)  # (B, C, t, h, w)
        audio = payload["audio"].to(device)  # (B, 1, S)
        za = None if audio_vae is None else _latents(audio_vae, audio, mode, normalize, gen)  # (B, C, L)
        zm = _latents(video_vae, video.flip(-1), mode, normalize, gen) if mirror else None  # mirrored twins
        emb, emb_mask = text_encoder.encode(payload["caption"]) if store_text else (None, None)
        for i, meta in enumerate(payload["meta"]):
            latent = {
                "mode": mode,
                "normalized": normalize,
                "dtype": dtype,
                "fps": float(fps),
                "num_frames": int(video.shape[2]),
                "height": int(video.shape[3]),
                "width": int(video.shape[4]),
                "sample_rate": int(sample_rate),
                "has_audio": bool(payload["has_audio"][i]),
                "window_start": meta["window_start"],
                "video_shape": list(zv.shape[1:]),
                "audio_shape": None if za is None else list(za.shape[1:]),
            }
            if store_text:  # which encoder made text_emb.npy (the DiT uses it only if its own is the same)
                latent["text_encoder"] = text_id
            files = {"video_latent.npy": _npy(zv[i], np_dtype)}
            if za is not None:
                files["audio_latent.npy"] = _npy(za[i], np_dtype)
            if emb is not None:
                files["text_emb.npy"] = _npy(emb[i], np_dtype)
                files["text_mask.npy"] = _npy(emb_mask[i], np.bool_)
            source = {k: v for k, v in meta.items() if k not in ("key", "url", "window_start")}
            files["json"] = json.dumps(
                {**source, "source_key": meta["key"], "source_url": meta["url"], "latent": latent}
            ).encode()
            files["txt"] = payload["caption"][i].encode()
            pending[url].append((meta["key"], files))
            if zm is not None:
                twin = dict(files, **{"video_latent.npy": _npy(zm[i], np_dtype)})
                twin["json"] = json.dumps(  # the source's geometry, in its own width's pixels
                    {
                        **mirror_meta(source),
                        "source_key": meta["key"],
                        "source_url": meta["url"],
                        "latent": latent,
                    }
                ).encode()
                twin["txt"] = swap_sides(payload["caption"][i]).encode()
                pending[url].append((meta["key"] + MIRROR_SUFFIX, twin))
    bar.close()
    report["skipped"] = dict(sorted(report["skipped"].items()))
    report["seconds"] = round(time.time() - t_start, 2)
    name = "latents_report.json" if world_size == 1 else f"latents_report.rank{rank}.json"
    (out / name).write_text(json.dumps(report, indent=2))
    if report["skipped"]:
        log.warning(
            "latents: %d input samples/shards could not be encoded %s; each one is listed in %s",
            sum(report["skipped"].values()),
            report["skipped"],
            out / name,
        )
    log.info(
        "latents: %d samples written to %d shards in %s (%d filtered: no bucket fits)",
        report["samples_written"],
        report["shards_written"],
        out,
        report["filtered"],
    )
    return report


# ------------------------------------------------------------------------------------------ reading back


def decode_latent_sample(
    sample: dict, rng: np.random.Generator | None = None, caption_mix: CaptionMix | None = None
) -> tuple[Hashable, dict]:
    """One latent-shard sample -> (shape key, item); the key groups equal latent shapes.

    ``caption_mix`` draws the caption form from ``rng`` (:mod:`data_pipelines.caption_forms`). A sample with
    stored text embeddings (those of its txt) and a mix that can draw another form raises
    :class:`~data_pipelines.sample_errors.StreamConfigError`: embeddings cannot follow the caption.
    """
    if "video_latent.npy" not in sample:
        raise SampleError("no_media", "no video_latent.npy")
    if caption_mix is not None:
        if rng is None:
            raise ValueError("decode_latent_sample: caption_mix needs the per-sample rng")
        caption_mix.check_stored_text(sample)
    try:
        meta = json.loads(sample["json"])
        arrays = {
            k: torch.from_numpy(
                np.load(io.BytesIO(sample[k])).astype(np.float32 if k != "text_mask.npy" else np.bool_)
            )
            for k in LATENT_KEYS
            if k in sample
        }
    except Exception as exc:
        raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from exc
    lat = meta.get("latent", {})
    item = {
        "video_latent": arrays["video_latent.npy"],
        "audio_latent": arrays.get("audio_latent.npy"),
        "has_audio": bool(lat.get("has_audio", False)),
        "fps": float(lat.get("fps", meta.get("fps", 0.0))),
        "caption": sample.get("txt", b"").decode("utf-8", errors="replace"),
        "meta": {**meta, "key": sample.get("__key__"), "url": sample.get("__url__")},
        "text_emb": arrays.get("text_emb.npy"),
        "text_mask": arrays.get("text_mask.npy"),
    }
    if caption_mix is not None:
        caption_mix.apply(item, rng)
    audio_shape = None if item["audio_latent"] is None else tuple(item["audio_latent"].shape)
    return (tuple(item["video_latent"].shape), audio_shape, item["text_emb"] is not None), item


def collate_latents(items: list[dict]) -> dict:
    """Stack latents of one shape; text embeddings are padded to the longest (mask False on padding)."""
    batch = {
        "video_latent": torch.stack([it["video_latent"] for it in items]),  # (B, C, t, h, w)
        "has_audio": torch.tensor([it["has_audio"] for it in items], dtype=torch.bool),
        "caption": [it["caption"] for it in items],
        "fps": torch.tensor([it["fps"] for it in items], dtype=torch.float32),
        "meta": [it["meta"] for it in items],
    }
    if items[0]["audio_latent"] is not None:
        batch["audio_latent"] = torch.stack([it["audio_latent"] for it in items])  # (B, C, L)
    if items[0]["text_emb"] is not None:
        n = max(it["text_emb"].shape[0] for it in items)
        emb = torch.zeros(len(items), n, items[0]["text_emb"].shape[1])  # (B, N, D)
        mask = torch.zeros(len(items), n, dtype=torch.bool)  # (B, N)
        for i, it in enumerate(items):
            emb[i, : it["text_emb"].shape[0]] = it["text_emb"]
            mask[i, : it["text_mask"].shape[0]] = it["text_mask"]
        batch["text_emb"], batch["text_mask"] = emb, mask
    return batch


class LatentDataModule(StreamingDataModule):
    """Batches of cached latents, grouped by latent shape (the same streaming, resume and skip logic as
    :class:`~data_pipelines.dataset.VideoDataModule`).

    Yields ``video_latent (B, C, t, h, w)``, ``audio_latent (B, C, L)`` (when stored), ``has_audio (B,)``,
    ``caption``, ``fps (B,)``, ``meta``, and ``text_emb (B, N, D)`` + ``text_mask (B, N)`` when stored.

    Args:
        batch_size: samples per batch, or None to use ``max_tokens // (t * (h // patch) * (w // patch))``.
        caption_keys (a streaming argument): caption forms mixed per sample from the json ``captions`` that
            ``encode_shards`` keeps; shards with stored text embeddings (a frozen text encoder) hold those of
            the txt only, so a mix that can draw another form stops with a StreamConfigError (a ValueError)
            on their first sample: encode them without ``text.encoder`` to mix captions.
    """

    def __init__(
        self,
        train_urls: str | Sequence[str] | None = None,
        val_urls: str | Sequence[str] | None = None,
        *,
        batch_size: int | None = 8,
        max_tokens: int | None = None,
        patch_size: int = 2,
        **stream_kwargs,
    ) -> None:
        super().__init__(train_urls, val_urls, **stream_kwargs)
        if batch_size is None and not max_tokens:
            raise ValueError("LatentDataModule: set batch_size or max_tokens")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.max_tokens, self.patch_size = batch_size, max_tokens, patch_size

    def _batch_size(self, key: Hashable) -> int:
        if self.batch_size is not None:
            return self.batch_size
        _, t, h, w = key[0]
        p = self.patch_size
        return max(1, int(self.max_tokens) // (t * max(1, h // p) * max(1, w // p)))

    def _decoder(self, train: bool) -> tuple[Callable, Callable, Callable]:
        decode = partial(decode_latent_sample, caption_mix=self.caption_mix)
        return decode, self._batch_size, collate_latents


# ------------------------------------------------------------------------------------------ CLI


def run(cfg: DictConfig) -> dict:
    """Load the VAEs (and an optional frozen text encoder) named in ``cfg`` and encode ``cfg.shards``."""
    v = cfg.vae
    if v.get("allowed_targets") is not None:
        raise ValueError(
            "vae.allowed_targets is gone: networks are built by sora.checkpoint.build_module, which "
            "accepts the project's own networks only (sora.checkpoint.ALLOWED_TARGETS)"
        )
    common = {"allow_random_init": bool(v.allow_random_init)}
    use_ema = bool(v.get("use_ema", True))
    video_vae = load_vae_for(
        "video", v.video, v.video_model, key_prefix=v.video_key_prefix, use_ema=use_ema, **common
    )
    audio_vae = None
    if v.audio is not None or v.audio_model is not None:  # neither: no audio latents
        audio_vae = load_vae_for(
            "audio", v.audio, v.audio_model, key_prefix=v.audio_key_prefix, use_ema=use_ema, **common
        )
    text = None
    if cfg.text.encoder is not None:
        text = load_vae(cfg.text.encoder, cfg.text.weights, allow_random_init=True)
    _, _, local_rank = _dist_env()
    device = cfg.device
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    save_resolved_config(cfg, cfg.out_dir, "latents_config.yaml")
    return encode_shards(
        video_vae,
        audio_vae,
        cfg.shards,
        cfg.out_dir,
        text_encoder=text,
        buckets=OmegaConf.to_container(cfg.buckets),
        aspect_ratios=list(cfg.aspect_ratios),
        fps=cfg.fps,
        sample_rate=cfg.sample_rate,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        mode=cfg.mode,
        normalize=cfg.normalize,
        dtype=cfg.dtype,
        device=device,
        seed=cfg.seed,
        mirror=bool(cfg.get("mirror", False)),
    )


@hydra.main(config_path=str(CONF_DIR), config_name="latents", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
