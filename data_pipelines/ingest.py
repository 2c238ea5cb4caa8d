"""Ingest raw videos into webdataset shards of clips.

``python -m data_pipelines.ingest input=/data/raw out_dir=/data/shards num_workers=8``

Flow, per source file (one work unit, run in a pool of ``num_workers`` processes):

1. list sources (:mod:`data_pipelines.ingest_sources`): a folder (recursive, ``extensions``), a
   ``.csv``/``.jsonl`` manifest (``path``, ``caption``, extra columns are kept under ``extra`` in the json; a
   row is a path or an http/https/ftp URL, never a command), a ``.txt`` URL list (paths, ffmpeg URLs, and
   ``pipe:cmd`` only with ``allow_pipe=true``) or one video file. A second name for one file (a symlink, a
   repeated row) is refused as a duplicate. Captions come from the manifest, else a sidecar ``<video>.txt``,
   else ``""``.
2. probe (duration, fps, size, audio), then decode once, frame by frame: frames are put on a constant-rate
   grid by their timestamps (a variable-frame-rate source keeps its sync with the sound), each is
   downscaled to ``clip.detect_size``^2 for the scene-cut detector (a cut = mean |difference| above
   ``cut_threshold`` and ``cut_ratio`` times the recent mean) and the motion score; a clip closes at a cut
   or at ``clip.max_seconds``.
3. filter clips (``too_short``, ``too_long``, ``low_resolution``, ``static``; the reason of every drop is
   kept), re-encode the survivors with :func:`sora.media.encode_mp4` together with their audio window,
   downmixed to ``output.audio_channels`` (mono by default).

The main process writes the clips into ``shard-%06d.tar`` (``{key}.mp4``, ``{key}.json``, ``{key}.txt``) of at
most ``shard.max_samples`` clips / ``shard.max_bytes`` bytes, each written as ``*.tar.tmp`` and renamed when
complete. After each rename one line is appended to ``ingest_state.jsonl``: the shard, its clip keys, and the
outcome of every file whose clips are now all in finished shards. A rerun skips finished files and already
written clip keys (a file cut off mid-shard by a crash is decoded again, its written clips are not repeated),
so it never duplicates nor loses a clip; files that failed (unreadable, cut short, a clip that failed to
encode) are tried again. ``ingest_report.json`` sums the state over all runs and lists every refused source,
dropped clip, lost or padded audio track and variable-frame-rate file with its reason.

With ``captioner=NAME`` (``ground_truth``, ``passthrough``, ``pixel``, ``hf``; options in ``conf/captioner/``)
the main process captions the clips before they are written (``captioner.when=missing``: clips without a
caption; ``always``: every clip), through the same code as ``recaption.run``: the new caption goes into
``txt``, the json gets ``caption_original``, ``captioner`` and ``captions``; a clip the captioner fails on
keeps its caption and is counted (``caption_failures``) and named (``caption_failed``) in the report.

Bad input never stops the job: empty, truncated, unreadable files and files without a video stream are
counted as unreadable with their error; a file that fails mid-stream keeps the clips decoded before the error
(``files_partial``); non-UTF-8 captions are decoded with U+FFFD replacement, kept and counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data_pipelines.av_samples import decode_whole_clip
from data_pipelines.ingest_sources import (
    FETCHED_SCHEMES,
    Listing,
    SourceItem,
    decode_text,
    dedupe,
    identity,
    list_sources,
    url_scheme,
)
from data_pipelines.shard_writer import ShardWriter
from recaption.apply import caption_clips, recaptioned_meta
from recaption.base import Captioner, CaptionInput
from recaption.registry import build_captioner, captioner_spec, check_captioner
from sora import media
from sora.config import CONF_DIR, save_resolved_config

log = logging.getLogger(__name__)

STATE_FILE = "ingest_state.jsonl"
REPORT_FILE = "ingest_report.json"
SHARD_PATTERN = "shard-%06d.tar"
AUDIO_PAD_TOLERANCE = 0.1  # seconds: an AAC track may end a frame (1024 samples) before the video
DROP_REASONS = ("too_short", "too_long", "low_resolution", "static", "encode_error")
CAPTION_BATCH = 8  # clips per caption_batch call when ingest captions (captioner=)


@dataclass
class Clip:
    key: str
    mp4: bytes
    meta: dict
    caption: str


@dataclass
class FileOutcome:
    """What became of one source: written clips, dropped clips with reasons, or the error that stopped it."""

    source: str
    identity: str = ""  # the resolved file (or the URL): a second name for it is a duplicate
    clips: list[Clip] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    error: str | None = None  # unreadable: nothing could be decoded
    partial_error: str | None = None  # decoding stopped early; the clips before the error are kept
    caption_replaced: bool = False
    caption_missing: bool = False
    audio_errors: list[dict] = field(default_factory=list)  # clips kept without their (unreadable) sound
    audio_padded: list[dict] = field(default_factory=list)  # clips longer than the audio track: silence added
    frames_repeated: int = 0  # variable frame rate: frames shown twice on the constant-rate grid ...
    frames_skipped: int = 0  # ... and frames left out, so that pictures keep their time (and sync)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "identity": self.identity or self.source,
            "clips": len(self.clips),
            "dropped": self.dropped,
            "error": self.error,
            "partial_error": self.partial_error,
            "caption_replaced": self.caption_replaced,
            "caption_missing": self.caption_missing,
            "audio_errors": self.audio_errors,
            "audio_padded": self.audio_padded,
            "frames_repeated": self.frames_repeated,
            "frames_skipped": self.frames_skipped,
        }


def _failed(summary: dict) -> bool:
    """A file a rerun tries again: unreadable, cut short, or with a clip that failed to encode."""
    return bool(
        summary["error"]
        or summary["partial_error"]
        or any(d["reason"] == "encode_error" for d in summary["dropped"])
    )


@dataclass
class IngestSettings:
    """The plain (picklable) settings a worker needs, validated from the Hydra config."""

    max_seconds: float = 10.0
    scene_cut: bool = True
    cut_threshold: float = 0.15
    cut_ratio: float = 3.0
    detect_size: int = 32
    min_duration: float = 1.0
    max_duration: float | None = 60.0
    min_width: int = 64
    min_height: int = 64
    min_motion: float = 0.002
    max_short_side: int | None = None
    audio_sample_rate: int | None = None
    audio_channels: int = 1
    crf: int = 18
    preset: str = "veryfast"
    sidecar: bool = True
    fetch_timeout: float = 600.0

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> IngestSettings:
        s = cls(
            **cfg.clip,
            **cfg.filter,
            **cfg.output,
            sidecar=cfg.caption.sidecar,
            fetch_timeout=cfg.fetch_timeout,
        )
        checks = {
            "clip.max_seconds": s.max_seconds > 0,
            "clip.detect_size": s.detect_size >= 4,
            "clip.cut_threshold": 0 < s.cut_threshold <= 1,
            "filter.min_duration": s.min_duration >= 0,
            "filter.max_duration": s.max_duration is None or s.max_duration >= s.min_duration,
            "output.max_short_side": s.max_short_side is None or s.max_short_side >= 2,
            "output.audio_channels": s.audio_channels in (1, 2),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ingest config: invalid {name} = {OmegaConf.select(cfg, name)}")
        return s


# ------------------------------------------------------------------------------------------ one file


def _fetch(item: SourceItem, timeout: float) -> str | bytes:
    """What PyAV opens: a local file's absolute path, or the bytes of an http(s)/ftp URL or a ``pipe:``.

    The kind was decided when the source was listed, never from the string here: a local file named
    ``pipe:x.mp4`` or ``concat:a|b`` is opened as a file (an absolute path is never an ffmpeg protocol),
    and only a ``.txt`` URL list with ``allow_pipe=true`` makes ``pipe:`` items.
    """
    source = item.source
    if item.kind == "pipe":
        return subprocess.run(source[5:], shell=True, capture_output=True, check=True, timeout=timeout).stdout
    if item.kind == "url":
        if url_scheme(source) in FETCHED_SCHEMES:
            with urllib.request.urlopen(source, timeout=timeout) as response:
                return response.read()
        return source  # another ffmpeg protocol, listed in a .txt URL list: opened by PyAV itself
    if item.kind != "path":
        raise ValueError(f"unknown source kind {item.kind!r}")
    if not os.access(source, os.R_OK):
        raise OSError(f"cannot read {source}")
    if os.path.getsize(source) == 0:
        raise ValueError("empty file (0 bytes)")
    return os.path.abspath(source)


def _clip_key(source: str, index: int) -> str:
    return f"{hashlib.sha1(source.encode()).hexdigest()[:16]}_{index:05d}"


def _caption(item: SourceItem, sidecar: bool) -> tuple[str, bool, bool]:
    """(caption, replaced, missing) from the manifest, else the sidecar ``.txt``, else empty."""
    if item.caption is not None:
        return item.caption.strip(), item.caption_replaced, not item.caption.strip()
    side = Path(item.source).with_suffix(".txt")
    if sidecar and item.kind == "path" and side.is_file():
        text, replaced = decode_text(side.read_bytes())
        return text, replaced, not text
    return "", False, True


class _ClipCutter:
    """Accumulates decoded frames and yields finished segments at scene cuts and at the length limit."""

    def __init__(self, s: IngestSettings, fps: float) -> None:
        self.s, self.fps = s, fps
        self.max_frames = max(1, round(s.max_seconds * fps))
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.diffs: list[float] = []  # differences between consecutive frames of the current segment
        self.prev: np.ndarray | None = None
        self.starts_at_cut = False

    def push(self, rgb: np.ndarray, small: np.ndarray, t: float) -> dict | None:
        """Add one frame; returns the segment it closes, if any."""
        done = None
        diff = None if self.prev is None else float(np.abs(small - self.prev).mean())
        recent = self.diffs[-8:]
        is_cut = (
            self.s.scene_cut
            and diff is not None
            and diff > self.s.cut_threshold
            and (not recent or diff > self.s.cut_ratio * float(np.mean(recent)))
        )
        if is_cut or len(self.frames) >= self.max_frames:
            done = self.flush()
            self.starts_at_cut = is_cut
        elif diff is not None:
            self.diffs.append(diff)
        self.frames.append(rgb)
        self.times.append(t)
        self.prev = small
        return done

    def flush(self) -> dict | None:
        if not self.frames:
            return None
        seg = {
            "frames": self.frames,
            "start": self.times[0],
            "end": self.times[-1] + 1.0 / self.fps,
            "motion": float(np.mean(self.diffs)) if self.diffs else 0.0,
            "after_cut": self.starts_at_cut,
        }
        self.frames, self.times, self.diffs = [], [], []
        return seg


class _ConstantRate:
    """Puts decoded frames on the grid ``t0 + k / fps`` by their timestamps, so pictures keep their time.

    Clips are encoded at a constant rate, and their sound is cut by time: a variable-frame-rate source
    whose frames were simply numbered would drift from its sound (a marker and a click both at 1.50 s came
    out 0.875 s apart). Each frame takes the slot nearest its timestamp; a slot no frame reaches repeats
    the frame before it, and of two frames on one slot the nearer is kept. A constant-rate source fills
    every slot exactly once, so it is unchanged. A gap longer than ``max_gap`` seconds (a clip's length)
    starts a new grid, and ``push`` says so: the clip before it must end there.
    """

    def __init__(self, fps: float, max_gap: float) -> None:
        self.fps, self.max_gap = fps, max_gap
        self.t0: float | None = None
        self.held: tuple[object, int, float] | None = None  # (frame, slot, timestamp) not yet placed
        self.repeated = 0
        self.skipped = 0

    def push(self, frame: object, t: float) -> tuple[list[tuple[object, float]], bool]:
        """Add one decoded frame; returns the frames placed with their slot times, and whether a gap
        ended the grid before this frame."""
        if self.t0 is None:
            self.t0 = t
        slot = round((t - self.t0) * self.fps)
        if self.held is None:
            self.held = (frame, slot, t)
            return [], False
        held, held_slot, held_t = self.held
        if slot <= held_slot:  # two frames on one slot, or a timestamp going back: keep the nearer
            self.skipped += 1
            if slot == held_slot and abs(t - self._time(slot)) < abs(held_t - self._time(slot)):
                self.held = (frame, slot, t)
            return [], False
        if (slot - held_slot) / self.fps > self.max_gap:
            placed = self.flush()
            self.t0, self.held = t, (frame, 0, t)
            return placed, True
        self.repeated += slot - held_slot - 1
        self.held = (frame, slot, t)
        return [(held, self._time(k)) for k in range(held_slot, slot)], False

    def flush(self) -> list[tuple[object, float]]:
        """The frame still held, placed on its slot."""
        if self.held is None:
            return []
        held, slot, _ = self.held
        self.held = None
        return [(held, self._time(slot))]

    def _time(self, slot: int) -> float:
        return (self.t0 or 0.0) + slot / self.fps


def _output_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    short = min(width, height)
    scale = 1.0 if not max_short_side or short <= max_short_side else max_short_side / short
    w, h = int(width * scale), int(height * scale)
    return w - w % 2, h - h % 2  # H.264 yuv420p needs even sizes


def process_source(item: SourceItem, s: IngestSettings) -> FileOutcome:
    """Decode one source into filtered, re-encoded clips. Never raises: errors are recorded in the outcome."""
    out = FileOutcome(item.source, identity(item.source, item.kind))
    try:
        caption, out.caption_replaced, out.caption_missing = _caption(item, s.sidecar)
        src = _fetch(item, s.fetch_timeout)
        info = media.probe(src)
        if not info.fps > 0:
            raise ValueError("unknown frame rate")
    except Exception as exc:  # noqa: BLE001 - any failure to open is "unreadable", with its message
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    if info.width < s.min_width or info.height < s.min_height:
        out.dropped.append(
            {
                "reason": "low_resolution",
                "start": 0.0,
                "end": info.duration,
                "detail": f"{info.width}x{info.height}",
            }
        )
        return out
    width, height = _output_size(info.width, info.height, s.max_short_side)
    cutter, index = _ClipCutter(s, info.fps), 0

    def finish(seg: dict | None) -> None:
        nonlocal index
        if seg is None:
            return
        index += 1
        try:
            _emit(out, item, s, src, info, seg, index - 1, caption, width, height)
        except Exception as exc:  # noqa: BLE001 - one clip failing to encode must not take the file down
            out.dropped.append(
                {
                    "reason": "encode_error",
                    "start": seg["start"],
                    "end": seg["end"],
                    "detail": f"{type(exc).__name__}: {exc}",
                }
            )

    grid = _ConstantRate(info.fps, max_gap=s.max_seconds)

    def place(placed: list[tuple[object, float]]) -> None:
        for (rgb, small), t in placed:
            finish(cutter.push(rgb, small, t))

    decoded = 0
    try:
        with av.open(io.BytesIO(src) if isinstance(src, bytes) else src) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else decoded / info.fps
                rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                small = frame.reformat(width=s.detect_size, height=s.detect_size, format="rgb24").to_ndarray()
                placed, gap = grid.push((rgb, small.astype(np.float32) / 255.0), t)
                place(placed)
                if gap:
                    finish(cutter.flush())
                decoded += 1
    except Exception as exc:  # noqa: BLE001 - keep what was decoded before a truncated / corrupt tail
        msg = f"{type(exc).__name__}: {exc}"
        if decoded == 0:
            out.error = msg
            return out
        out.partial_error = msg
    out.frames_repeated, out.frames_skipped = grid.repeated, grid.skipped
    try:
        place(grid.flush())
        finish(cutter.flush())
    except Exception as exc:  # noqa: BLE001
        out.partial_error = out.partial_error or f"{type(exc).__name__}: {exc}"
    if decoded == 0 and out.error is None:
        out.error = "video stream has no decodable frames"
    elif out.partial_error is None and info.num_frames and decoded < info.num_frames - 1:
        out.partial_error = f"decoded {decoded} of {info.num_frames} frames (truncated?)"
    return out


def _emit(
    out: FileOutcome,
    item: SourceItem,
    s: IngestSettings,
    src: str | bytes,
    info: media.MediaInfo,
    seg: dict,
    index: int,
    caption: str,
    width: int,
    height: int,
) -> None:
    """Filter one segment and append it to ``out`` as a clip or as a drop record."""
    duration = len(seg["frames"]) / info.fps
    span = {"start": round(seg["start"], 4), "end": round(seg["end"], 4)}
    times = {"start_time": span["start"], "end_time": span["end"]}
    reason = None
    if duration < s.min_duration:
        reason = "too_short"
    elif s.max_duration is not None and duration > s.max_duration:
        reason = "too_long"
    elif len(seg["frames"]) > 1 and seg["motion"] < s.min_motion:
        reason = "static"
    if reason is not None:
        detail = f"{duration:.2f}s motion {seg['motion']:.4f}"
        out.dropped.append({"reason": reason, **span, "detail": detail})
        return
    audio, rate, audio_error = None, None, None
    if info.has_audio:
        try:
            audio, rate = media.read_audio(src, start=seg["start"], duration=duration)
        except Exception as exc:  # noqa: BLE001 - keep the pictures, flag the lost sound in the json
            audio_error = f"{type(exc).__name__}: {exc}"
            out.audio_errors.append({"clip_index": index, **span, "error": audio_error})
        padded = _outside(info.audio_span, seg["start"], seg["start"] + duration)
        if audio is not None and padded > AUDIO_PAD_TOLERANCE:  # read_audio filled the gap with silence
            out.audio_padded.append({"clip_index": index, **span, "seconds": round(padded, 3)})
        if audio is not None:  # 5.1, 7.1...: downmixed to output.audio_channels (mono by default)
            audio = media.downmix(audio, _channel_names(info.audio_layout, audio.shape[0]), s.audio_channels)
        if audio is not None and s.audio_sample_rate and rate != s.audio_sample_rate:
            audio, rate = media.resample_audio(audio, rate, s.audio_sample_rate).numpy(), s.audio_sample_rate
    video = np.stack(seg["frames"])  # (T, H, W, 3)
    data = media.encode_mp4(video, info.fps, audio, rate or 16000, crf=s.crf, preset=s.preset)
    meta = {
        "source": item.source,
        "clip_index": index,
        **times,
        "duration": round(duration, 4),
        "fps": info.fps,
        "num_frames": len(seg["frames"]),
        "width": width,
        "height": height,
        "has_audio": audio is not None,
        "audio_sample_rate": rate,
        "audio_channels": None if audio is None else int(audio.shape[0]),
        "source_audio_layout": info.audio_layout,
        "motion_score": round(seg["motion"], 6),
        "starts_at_cut": seg["after_cut"],
        "source_width": info.width,
        "source_height": info.height,
        "caption_decode_error": out.caption_replaced,
    }
    if audio_error:
        meta["audio_error"] = audio_error
    if out.audio_padded and out.audio_padded[-1]["clip_index"] == index:
        meta["audio_padded_seconds"] = out.audio_padded[-1]["seconds"]
    if item.extra:
        meta["extra"] = item.extra
    out.clips.append(Clip(_clip_key(item.source, index), data, meta, caption))


def _outside(span: tuple[float, float] | None, start: float, end: float) -> float:
    """Seconds of ``[start, end]`` that the audio track ``span`` does not cover (0 when unknown)."""
    if span is None:
        return 0.0
    return max(0.0, span[0] - start) + max(0.0, end - span[1])


def _channel_names(layout: str | None, channels: int) -> list[str]:
    """The source's channel names (FL, FR, FC, LFE...), or unknown positions if its layout says nothing."""
    try:
        names = media.layout_channels(layout) if layout else []
    except (ValueError, TypeError):  # a layout name FFmpeg cannot parse back
        names = []
    return names if len(names) == channels else ["NONE"] * channels


def _work(args: tuple[SourceItem, IngestSettings]) -> FileOutcome:
    return process_source(*args)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # resampling in every worker at once must not oversubscribe the cores


# ------------------------------------------------------------------------------------------ shards + state


class _State:
    """``ingest_state.jsonl``: one line per commit, ``{"shard": {...} | null, "files": [summary, ...]}``."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / STATE_FILE
        self.shards: list[dict] = []
        self.files: dict[str, dict] = {}
        self.keys: set[str] = set()
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("ignoring a torn line in %s (interrupted write)", self.path)
                    continue
                self._apply(rec)
        self.missing = [sh["name"] for sh in self.shards if not (out_dir / sh["name"]).exists()]
        if self.missing:
            log.warning("shards listed in %s are missing on disk: %s", self.path, self.missing)

    def _apply(self, rec: dict) -> None:
        if rec.get("shard"):
            self.shards.append(rec["shard"])
            self.keys.update(rec["shard"]["keys"])
        for f in rec.get("files", []):
            self.files[f["source"]] = f

    def commit(self, shard: dict | None, files: list[dict]) -> None:
        rec = {"shard": shard, "files": files}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._apply(rec)

    @property
    def next_index(self) -> int:
        return 1 + max((sh["index"] for sh in self.shards), default=-1)


class _ShardWriter:
    """Writes clips into size-bounded tar shards through ``*.tmp`` files renamed when complete."""

    def __init__(self, out_dir: Path, state: _State, max_samples: int, max_bytes: int) -> None:
        self.out_dir, self.state, self.max_samples, self.max_bytes = out_dir, state, max_samples, max_bytes
        self.index = state.next_index
        self.tar: ShardWriter | None = None
        self.keys: list[str] = []
        self.bytes = 0
        self.waiting: list[tuple[int, dict]] = []  # (shard index holding a file's last clip, file summary)
        self.shards_written = 0

    def add(self, clip: Clip) -> None:
        if self.tar is None:
            self.tar = ShardWriter(self._path(self.index))  # writes the .tmp path, renamed by close()
        files = {"mp4": clip.mp4, "json": json.dumps(clip.meta).encode(), "txt": clip.caption.encode()}
        self.bytes += self.tar.write(clip.key, files)
        self.keys.append(clip.key)
        if len(self.keys) >= self.max_samples or self.bytes >= self.max_bytes:
            self.close_shard()

    def file_done(self, summary: dict) -> None:
        """Commit a file's outcome once its last clip is in a finished shard (now, if it has none open)."""
        if self.tar is not None and summary["clips_added"]:
            self.waiting.append((self.index, summary))
        else:
            self.state.commit(None, [summary])

    def close_shard(self) -> None:
        if self.tar is None:
            return
        final = self.tar.close()
        shard = {
            "index": self.index,
            "name": final.name,
            "samples": len(self.keys),
            "bytes": final.stat().st_size,
            "keys": self.keys,
        }
        done = [s for i, s in self.waiting if i <= self.index]
        self.waiting = [(i, s) for i, s in self.waiting if i > self.index]
        self.state.commit(shard, done)
        self.tar, self.keys, self.bytes = None, [], 0
        self.index += 1
        self.shards_written += 1

    def _path(self, index: int, tmp: bool = False) -> Path:
        return self.out_dir / (SHARD_PATTERN % index + (".tmp" if tmp else ""))


def _report(state: _State, listing: Listing, this_run: dict, cfg: DictConfig) -> dict:
    files = list(state.files.values())
    dropped = Counter(d["reason"] for f in files for d in f["dropped"])
    vfr = [f for f in files if f.get("frames_repeated") or f.get("frames_skipped")]
    return {
        "input": str(cfg.input),
        "out_dir": str(cfg.out_dir),
        "files_seen": len(listing.items),
        "files_done": len(files),
        "files_with_clips": sum(1 for f in files if f["clips"]),
        "files_unreadable": sum(1 for f in files if f["error"]),
        "unreadable": [{"source": f["source"], "error": f["error"]} for f in files if f["error"]],
        "files_partial": [
            {"source": f["source"], "error": f["partial_error"], "clips": f["clips"]}
            for f in files
            if f["partial_error"]
        ],
        "clips_written": sum(sh["samples"] for sh in state.shards),
        "clips_dropped": {**{r: 0 for r in DROP_REASONS}, **dropped},
        "dropped": [{"source": f["source"], **d} for f in files for d in f["dropped"]],
        "audio_lost": [{"source": f["source"], **a} for f in files for a in f.get("audio_errors", [])],
        "audio_padded": [{"source": f["source"], **a} for f in files for a in f.get("audio_padded", [])],
        "files_vfr": [{k: f[k] for k in ("source", "frames_repeated", "frames_skipped")} for f in vfr],
        "captions_non_utf8": sum(1 for f in files if f["caption_replaced"]),
        "captions_missing": sum(1 for f in files if f["caption_missing"] and not f["error"]),
        "clips_uncaptioned": sum(f.get("clips_uncaptioned", 0) for f in files),
        "captions_generated": sum(f.get("captions_generated", 0) for f in files),
        "caption_failures": sum(len(f.get("caption_failed", [])) for f in files),
        "caption_failed": [{"source": f["source"], **c} for f in files for c in f.get("caption_failed", [])],
        "refused": listing.refused,
        "files_ignored": dict(sorted(listing.ignored.items())),
        "shards": [{k: sh[k] for k in ("name", "samples", "bytes")} for sh in state.shards],
        "shards_missing": state.missing,
        "this_run": this_run,
    }


def caption_new_clips(captioner: Captioner, clips: list[Clip], when: str) -> dict:
    """Caption ``clips`` in place (all, or those without a caption when ``when="missing"``); returns
    ``{"captions_generated": n, "caption_failed": [{"key", "reason", "message"}]}`` (a failed clip keeps its
    caption)."""
    todo = [c for c in clips if when == "always" or not c.caption]
    failed: list[dict] = []
    generated = 0
    for start in range(0, len(todo), CAPTION_BATCH):
        batch, inputs = [], []
        for clip in todo[start : start + CAPTION_BATCH]:
            try:
                decoded = decode_whole_clip({"mp4": clip.mp4})
                inputs.append(
                    CaptionInput(
                        frames=decoded.video,
                        audio=decoded.audio,
                        fps=decoded.fps,
                        sample_rate=int(decoded.sample_rate or 0),
                        meta=clip.meta,
                        caption=clip.caption,
                        key=clip.key,
                    )
                )
                batch.append(clip)
            except Exception as exc:  # noqa: BLE001 - the clip is written with its caption; the failure named
                failed.append({"key": clip.key, "reason": "decode_error", "message": f"{exc}"[:500]})
        for clip, outcome in zip(batch, caption_clips(captioner, inputs)):
            if outcome.caption is None:
                failed.append({"key": clip.key, "reason": outcome.reason, "message": outcome.message})
                log.warning("caption failed for %s (%s): %s", clip.key, outcome.reason, outcome.message)
                continue
            clip.meta = recaptioned_meta(clip.meta, clip.caption, captioner, outcome.caption)
            clip.caption = outcome.caption.text
            generated += 1
    return {"captions_generated": generated, "caption_failed": failed}


def _out_dir(path: str) -> Path:
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"ingest config: out_dir = {path} is a file; it must be a folder (or not exist yet)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"ingest config: out_dir = {path} cannot be created: {exc}") from exc
    return out_dir


def run(cfg: DictConfig) -> dict:
    """Ingest ``cfg.input`` into shards under ``cfg.out_dir``; returns (and writes) the report."""
    t0 = time.time()
    settings = IngestSettings.from_cfg(cfg)
    if cfg.shard.max_samples < 1 or cfg.shard.max_bytes < 1:
        raise ValueError(f"ingest config: shard.max_samples / shard.max_bytes must be >= 1, got {cfg.shard}")
    if cfg.num_workers < 0:
        raise ValueError(f"ingest config: num_workers must be >= 0, got {cfg.num_workers}")
    spec = captioner_spec(cfg.captioner) if cfg.get("captioner") is not None else None
    when = "missing"
    if spec is not None:  # a wrong name or a missing model folder stops here, before any work
        check_captioner(spec["name"], **spec["options"])
        when = str(cfg.captioner.get("when", "missing"))
        if when not in ("missing", "always"):
            raise ValueError(f"ingest config: captioner.when must be missing or always, got {when!r}")
    out_dir = _out_dir(str(cfg.out_dir))
    save_resolved_config(cfg, out_dir, "ingest_config.yaml")
    listing = list_sources(str(cfg.input), list(cfg.extensions), allow_pipe=bool(cfg.allow_pipe))
    for tmp in out_dir.glob("*.tmp"):
        tmp.unlink()  # a shard left half-written by an interrupted run
    state = _State(out_dir)
    dedupe(listing, {f.get("identity", f["source"]): f["source"] for f in state.files.values()})
    for r in listing.refused:
        log.warning("refused %s (%s): %s", r["source"], r["where"], r["reason"])
    pending = [it for it in listing.items if it.source not in state.files or _failed(state.files[it.source])]
    retried = sum(1 for it in pending if it.source in state.files)
    writer = _ShardWriter(out_dir, state, int(cfg.shard.max_samples), int(cfg.shard.max_bytes))
    clips_written = 0
    pool = None
    if cfg.num_workers > 0 and len(pending) > 1:
        pool = mp.get_context(cfg.start_method).Pool(cfg.num_workers, initializer=_init_worker)
        outcomes = pool.imap(_work, [(it, settings) for it in pending], chunksize=1)
    else:
        outcomes = (process_source(it, settings) for it in pending)
    try:
        # built after the workers are forked: a model on a GPU stays in this process
        captioner = build_captioner(spec["name"], **spec["options"]) if spec is not None else None
        for outcome in tqdm(outcomes, total=len(pending), desc="ingest", unit="file"):
            new = [c for c in outcome.clips if c.key not in state.keys]
            captioned = caption_new_clips(captioner, new, when) if captioner is not None else {}
            for clip in new:
                writer.add(clip)
            clips_written += len(new)
            if outcome.error:
                log.warning("unreadable %s: %s", outcome.source, outcome.error)
            for d in outcome.dropped:
                log.info("dropped %s [%.2f, %.2f]: %s", outcome.source, d["start"], d["end"], d["reason"])
            if outcome.frames_repeated or outcome.frames_skipped:
                log.warning(
                    "variable frame rate %s: %d frames repeated, %d skipped to keep time",
                    outcome.source,
                    outcome.frames_repeated,
                    outcome.frames_skipped,
                )
            uncaptioned = sum(1 for c in new if not c.caption)
            writer.file_done(
                {**outcome.summary(), "clips_added": len(new), "clips_uncaptioned": uncaptioned, **captioned}
            )
        writer.close_shard()
    finally:
        if pool is not None:
            pool.terminate()
    this_run = {
        "files_processed": len(pending),
        "files_retried": retried,
        "clips_written": clips_written,
        "shards_written": writer.shards_written,
        "seconds": round(time.time() - t0, 2),
    }
    report = _report(state, listing, this_run, cfg)
    tmp = out_dir / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out_dir / REPORT_FILE)
    log.info(
        "ingest: %d clips written this run, %d in total, dropped %s, %d unreadable, %d refused",
        clips_written,
        report["clips_written"],
        report["clips_dropped"],
        report["files_unreadable"],
        len(report["refused"]),
    )
    return report


@hydra.main(config_path=str(CONF_DIR), config_name="ingest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
