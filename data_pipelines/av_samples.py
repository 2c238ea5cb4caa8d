"""Decoding one raw webdataset sample (mp4 / image bytes, json, txt) into a video+audio training item.

decord reads a window of ``num_frames`` at the target ``fps``, frames picked by TIMESTAMP (a 30 fps source
read at 24 fps neither drifts nor slows down): a random window in training, the first one in validation. The
audio window ``[t0, t0 + T / fps)`` comes from :func:`sora.media.read_audio`, resampled to 16 kHz mono (zeros
and ``has_audio=False`` without a track).
"""

from __future__ import annotations

import io
import json

import decord
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data_pipelines.buckets import Bucket, BucketSpec
from data_pipelines.caption_forms import CaptionMix
from data_pipelines.sample_errors import SampleError
from sora import media

VIDEO_KEYS = ("mp4", "webm", "mkv", "mov", "avi")
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


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


def parse_meta(sample: dict) -> dict:
    """The sample's json as a dict ({} without one); raises SampleError("bad_json") when it is not one."""
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise SampleError("bad_json", str(exc)) from exc
    if not isinstance(meta, dict):
        raise SampleError("bad_json", f"not an object: {type(meta).__name__}")
    return meta


def read_caption(sample: dict) -> str:
    """The sample's ``txt`` (non-UTF-8 bytes decoded with U+FFFD replacement), stripped; "" without one."""
    return sample.get("txt", b"").decode("utf-8", errors="replace").strip()


def decode_whole_clip(sample: dict) -> media.Media:
    """Every frame of a sample's video (PyAV) with its whole sound track at the source rate, or an image as a
    one-frame clip (fps 1). Raises SampleError (``no_media``, ``decode_error``)."""
    vkey = next((k for k in VIDEO_KEYS if k in sample), None)
    ikey = next((k for k in IMAGE_KEYS if k in sample), None)
    try:
        if vkey is not None:
            clip = media.read_media(sample[vkey])
            if not clip.fps > 0:
                raise ValueError("unknown frame rate")
            return clip
        if ikey is not None:
            return media.Media(np.asarray(Image.open(io.BytesIO(sample[ikey])).convert("RGB"))[None], 1.0)
    except Exception as exc:
        raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from exc
    raise SampleError("no_media", f"keys {sorted(k for k in sample if not k.startswith('__'))}")


def decode_av_sample(
    sample: dict,
    spec: BucketSpec,
    *,
    fps: float,
    sample_rate: int,
    train: bool,
    rng: np.random.Generator,
    with_audio: bool = True,
    caption_mix: CaptionMix | None = None,
) -> tuple[Bucket, dict]:
    """One raw webdataset sample -> (bucket, item) with ``video (3, T, H, W)``, ``audio (1, S)``,
    ``has_audio``, ``caption``, ``fps``, ``meta``. Raises SampleError (bad) or Filtered (no bucket).
    ``with_audio=False`` skips the audio decode (video-only stages): zeros and ``has_audio=False``.
    ``caption_mix``: the caption form is drawn from ``rng`` after the window and crop (see
    :mod:`data_pipelines.caption_forms`); None keeps the txt."""
    meta, caption = parse_meta(sample), read_caption(sample)
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
    if caption_mix is not None:
        caption_mix.apply(item, rng)
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
