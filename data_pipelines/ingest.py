"""Ingest raw videos into webdataset shards of clips.

``python -m data_pipelines.ingest input=/data/raw out_dir=/data/shards num_workers=8``

Flow, per source file (one work unit, run in a pool of ``num_workers`` processes):

1. list sources: a folder (recursive, ``extensions``), a ``.csv``/``.jsonl`` manifest (``path``, ``caption``,
   extra columns are kept under ``extra`` in the json), a ``.txt`` URL list (paths, ffmpeg URLs, ``pipe:cmd``)
   or one video file. Captions come from the manifest, else a sidecar ``<video>.txt``, else ``""``.
2. probe (duration, fps, size, audio), then decode once, frame by frame: each frame is downscaled to
   ``clip.detect_size``^2 for the scene-cut detector (a cut = mean |difference| above ``cut_threshold`` and
   ``cut_ratio`` times the recent mean) and the motion score; a clip closes at a cut or at
   ``clip.max_seconds``.
3. filter clips (``too_short``, ``too_long``, ``low_resolution``, ``static``; the reason of every drop is
   kept), re-encode the survivors with :func:`sora.media.encode_mp4` together with their audio window.

The main process writes the clips into ``shard-%06d.tar`` (``{key}.mp4``, ``{key}.json``, ``{key}.txt``) of at
most ``shard.max_samples`` clips / ``shard.max_bytes`` bytes, each written as ``*.tar.tmp`` and renamed when
complete. After each rename one line is appended to ``ingest_state.jsonl``: the shard, its clip keys, and the
outcome of every file whose clips are now all in finished shards. A rerun skips finished files and already
written clip keys (a file cut off mid-shard by a crash is decoded again, its written clips are not repeated),
so it never duplicates nor loses a clip. ``ingest_report.json`` sums the state over all runs.

Bad input never stops the job: empty, truncated, unreadable files and files without a video stream are
counted as unreadable with their error; a file that fails mid-stream keeps the clips decoded before the error
(``files_partial``); non-UTF-8 captions are decoded with U+FFFD replacement, kept and counted.
"""

from __future__ import annotations

import csv
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

from data_pipelines.shard_writer import ShardWriter
from sora import media
from sora.config import CONF_DIR, save_resolved_config

log = logging.getLogger(__name__)

STATE_FILE = "ingest_state.jsonl"
REPORT_FILE = "ingest_report.json"
SHARD_PATTERN = "shard-%06d.tar"
DROP_REASONS = ("too_short", "too_long", "low_resolution", "static", "encode_error")


@dataclass
class SourceItem:
    """One input video: a local path, an ffmpeg URL or a ``pipe:`` command, with its manifest fields."""

    source: str
    caption: str | None = None
    caption_replaced: bool = False
    extra: dict = field(default_factory=dict)


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
    clips: list[Clip] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    error: str | None = None  # unreadable: nothing could be decoded
    partial_error: str | None = None  # decoding stopped early; the clips before the error are kept
    caption_replaced: bool = False
    caption_missing: bool = False

    def summary(self) -> dict:
        return {
            "source": self.source,
            "clips": len(self.clips),
            "dropped": self.dropped,
            "error": self.error,
            "partial_error": self.partial_error,
            "caption_replaced": self.caption_replaced,
            "caption_missing": self.caption_missing,
        }


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
    audio_mono: bool = False
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
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ingest config: invalid {name} = {OmegaConf.select(cfg, name)}")
        return s


# ------------------------------------------------------------------------------------------ listing


def _decode_text(raw: bytes) -> tuple[str, bool]:
    """UTF-8 text, or the U+FFFD-replaced decoding and ``True`` when the bytes are not valid UTF-8."""
    try:
        return raw.decode("utf-8").strip(), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace").strip(), True


def _manifest_rows(path: Path) -> list[dict]:
    text, _ = _decode_text(path.read_bytes())
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def list_sources(input_path: str, extensions: list[str]) -> tuple[list[SourceItem], list[str]]:
    """The videos to ingest and the manifest problems found while listing them (one message each)."""
    path, exts = Path(input_path), {"." + e.lower().lstrip(".") for e in extensions}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in exts and p.is_file())
        return [SourceItem(str(p)) for p in files], []
    if not path.exists():
        raise ValueError(f"ingest config: input = {input_path} does not exist")
    if path.suffix.lower() in exts:
        return [SourceItem(str(path))], []
    problems: list[str] = []
    if path.suffix == ".txt":
        lines = [ln.strip() for ln in _decode_text(path.read_bytes())[0].splitlines()]
        items = [
            SourceItem(ln if _is_remote(ln) else str(path.parent / ln))
            for ln in lines
            if ln and not ln.startswith("#")
        ]
        return items, problems
    if path.suffix not in (".csv", ".jsonl"):
        raise ValueError(
            f"ingest config: input = {input_path} is not a folder, .csv/.jsonl manifest, "
            f".txt URL list or video ({sorted(exts)})"
        )
    items = []
    for i, row in enumerate(_manifest_rows(path)):
        src = row.pop("path", None) or row.pop("url", None)
        if not src:
            problems.append(f"{path.name} row {i + 1}: no 'path' column")
            continue
        caption = row.pop("caption", None)
        replaced = isinstance(caption, str) and "\ufffd" in caption
        src = src if _is_remote(src) else str(path.parent / src)
        items.append(SourceItem(src, caption, replaced, dict(row)))
    return items, problems


def _is_remote(src: str) -> bool:
    return src.startswith("pipe:") or "://" in src


# ------------------------------------------------------------------------------------------ one file


def _fetch(source: str, timeout: float) -> str | bytes:
    """A local path as is; ``pipe:`` commands and http(s)/ftp URLs fetched into memory once."""
    if source.startswith("pipe:"):
        return subprocess.run(source[5:], shell=True, capture_output=True, check=True, timeout=timeout).stdout
    if source.split("://")[0] in ("http", "https", "ftp"):
        with urllib.request.urlopen(source, timeout=timeout) as response:
            return response.read()
    if "://" in source:
        return source  # any other ffmpeg protocol is opened by PyAV itself
    if not os.access(source, os.R_OK):
        raise OSError(f"cannot read {source}")
    if os.path.getsize(source) == 0:
        raise ValueError("empty file (0 bytes)")
    return source


def _clip_key(source: str, index: int) -> str:
    return f"{hashlib.sha1(source.encode()).hexdigest()[:16]}_{index:05d}"


def _caption(item: SourceItem, sidecar: bool) -> tuple[str, bool, bool]:
    """(caption, replaced, missing) from the manifest, else the sidecar ``.txt``, else empty."""
    if item.caption is not None:
        return item.caption.strip(), item.caption_replaced, not item.caption.strip()
    side = Path(item.source).with_suffix(".txt")
    if sidecar and not _is_remote(item.source) and side.is_file():
        text, replaced = _decode_text(side.read_bytes())
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


def _output_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    short = min(width, height)
    scale = 1.0 if not max_short_side or short <= max_short_side else max_short_side / short
    w, h = int(width * scale), int(height * scale)
    return w - w % 2, h - h % 2  # H.264 yuv420p needs even sizes


def process_source(item: SourceItem, s: IngestSettings) -> FileOutcome:
    """Decode one source into filtered, re-encoded clips. Never raises: errors are recorded in the outcome."""
    out = FileOutcome(item.source)
    try:
        caption, out.caption_replaced, out.caption_missing = _caption(item, s.sidecar)
        src = _fetch(item.source, s.fetch_timeout)
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

    decoded = 0
    try:
        with av.open(io.BytesIO(src) if isinstance(src, bytes) else src) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else decoded / info.fps
                rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                small = frame.reformat(width=s.detect_size, height=s.detect_size, format="rgb24").to_ndarray()
                finish(cutter.push(rgb, small.astype(np.float32) / 255.0, t))
                decoded += 1
    except Exception as exc:  # noqa: BLE001 - keep what was decoded before a truncated / corrupt tail
        msg = f"{type(exc).__name__}: {exc}"
        if decoded == 0:
            out.error = msg
            return out
        out.partial_error = msg
    try:
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
        if audio is not None and s.audio_mono:
            audio = media.to_mono(audio).numpy()
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
        "motion_score": round(seg["motion"], 6),
        "starts_at_cut": seg["after_cut"],
        "source_width": info.width,
        "source_height": info.height,
        "caption_decode_error": out.caption_replaced,
    }
    if audio_error:
        meta["audio_error"] = audio_error
    if item.extra:
        meta["extra"] = item.extra
    out.clips.append(Clip(_clip_key(item.source, index), data, meta, caption))


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
        missing = [sh["name"] for sh in self.shards if not (out_dir / sh["name"]).exists()]
        if missing:
            log.warning("shards listed in %s are missing on disk: %s", self.path, missing)

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


def _report(
    state: _State, items: list[SourceItem], problems: list[str], this_run: dict, cfg: DictConfig
) -> dict:
    files = list(state.files.values())
    dropped = Counter(d["reason"] for f in files for d in f["dropped"])
    return {
        "input": str(cfg.input),
        "out_dir": str(cfg.out_dir),
        "files_seen": len(items),
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
        "captions_non_utf8": sum(1 for f in files if f["caption_replaced"]),
        "captions_missing": sum(1 for f in files if f["caption_missing"] and not f["error"]),
        "manifest_problems": problems,
        "shards": [{k: sh[k] for k in ("name", "samples", "bytes")} for sh in state.shards],
        "this_run": this_run,
    }


def run(cfg: DictConfig) -> dict:
    """Ingest ``cfg.input`` into shards under ``cfg.out_dir``; returns (and writes) the report."""
    t0 = time.time()
    settings = IngestSettings.from_cfg(cfg)
    if cfg.shard.max_samples < 1 or cfg.shard.max_bytes < 1:
        raise ValueError(f"ingest config: shard.max_samples / shard.max_bytes must be >= 1, got {cfg.shard}")
    if cfg.num_workers < 0:
        raise ValueError(f"ingest config: num_workers must be >= 0, got {cfg.num_workers}")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out_dir, "ingest_config.yaml")
    items, problems = list_sources(str(cfg.input), list(cfg.extensions))
    for tmp in out_dir.glob("*.tmp"):
        tmp.unlink()  # a shard left half-written by an interrupted run
    state = _State(out_dir)
    pending = [it for it in items if it.source not in state.files]
    writer = _ShardWriter(out_dir, state, int(cfg.shard.max_samples), int(cfg.shard.max_bytes))
    clips_written = 0
    pool = None
    if cfg.num_workers > 0 and len(pending) > 1:
        pool = mp.get_context(cfg.start_method).Pool(cfg.num_workers, initializer=_init_worker)
        outcomes = pool.imap(_work, [(it, settings) for it in pending], chunksize=1)
    else:
        outcomes = (process_source(it, settings) for it in pending)
    try:
        for outcome in tqdm(outcomes, total=len(pending), desc="ingest", unit="file"):
            new = [c for c in outcome.clips if c.key not in state.keys]
            for clip in new:
                writer.add(clip)
            clips_written += len(new)
            if outcome.error:
                log.warning("unreadable %s: %s", outcome.source, outcome.error)
            for d in outcome.dropped:
                log.info("dropped %s [%.2f, %.2f]: %s", outcome.source, d["start"], d["end"], d["reason"])
            writer.file_done({**outcome.summary(), "clips_added": len(new)})
        writer.close_shard()
    finally:
        if pool is not None:
            pool.terminate()
    this_run = {
        "files_processed": len(pending),
        "clips_written": clips_written,
        "shards_written": writer.shards_written,
        "seconds": round(time.time() - t0, 2),
    }
    report = _report(state, items, problems, this_run, cfg)
    tmp = out_dir / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out_dir / REPORT_FILE)
    log.info(
        "ingest: %d clips written this run, %d in total, dropped %s, %d unreadable",
        clips_written,
        report["clips_written"],
        report["clips_dropped"],
        report["files_unreadable"],
    )
    return report


@hydra.main(config_path=str(CONF_DIR), config_name="ingest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
