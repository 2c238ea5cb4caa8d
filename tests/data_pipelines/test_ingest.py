"""data_pipelines.ingest: clips, scene cuts, filters, bad input, manifests and resumable shard writing."""

import io
import json
import os
import subprocess
import sys
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from data_pipelines import ingest
from data_pipelines.ingest import STATE_FILE, IngestSettings, process_source, run
from data_pipelines.ingest_sources import SourceItem
from sora import media
from sora.config import compose

FPS = 30


def _bar(num_frames: int, h: int = 64, w: int = 96, color=(200, 40, 40)) -> np.ndarray:
    video = np.zeros((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        x = (i * 3) % (w - 8)
        video[i, :, x : x + 8] = color
    return video


def _tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(_tone(1.0), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    media.write_mp4(d / "good.mp4", _bar(60), FPS, _tone(2.0))
    (d / "good.txt").write_text("a red bar slides right")
    media.write_mp4(d / "noaudio.mp4", _bar(48), 24)
    # a hard cut at frame 30 (1.0 s): a red bar on black, then green on bright noise
    second = np.random.RandomState(0).randint(120, 255, (30, 64, 96, 3)).astype(np.uint8)
    for i in range(30):
        second[i, :, 2 * i : 2 * i + 10] = (0, 255, 0)
    media.write_mp4(d / "cut.mp4", np.concatenate([_bar(30), second]), FPS, _tone(2.0))
    data = (d / "good.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (d / "empty.mp4").write_bytes(b"")
    _audio_only(d / "audio_only.mp4")
    media.write_mp4(d / "static.mp4", np.full((48, 64, 64, 3), 90, np.uint8), 24)
    media.write_mp4(d / "short.mp4", _bar(12), 24)
    media.write_mp4(d / "nested" / "latin1.mp4", _bar(40, color=(0, 0, 220)), 20, _tone(2.0))
    (d / "nested" / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    media.write_mp4(d / "long.mp4", _bar(24 * 7), 24, _tone(7.0))
    return d


def _cfg(input_path, out_dir, *overrides):
    return compose(
        "ingest",
        [
            f"input={input_path}",
            f"out_dir={out_dir}",
            "clip.max_seconds=3",
            "shard.max_samples=3",
            *overrides,
        ],
    )


def _read_shards(out_dir: Path) -> dict[str, dict]:
    clips = {}
    for shard in sorted(out_dir.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                clips.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return clips


def test_folder_ingest_counts_every_outcome(raw, tmp_path):
    out = tmp_path / "shards"
    report = run(_cfg(raw, out, "num_workers=2"))
    assert report["files_seen"] == 10 and report["files_done"] == 10
    errors = {Path(u["source"]).name: u["error"] for u in report["unreadable"]}
    assert set(errors) == {"truncated.mp4", "empty.mp4", "audio_only.mp4"}
    assert "0 bytes" in errors["empty.mp4"] and "no video stream" in errors["audio_only.mp4"]
    assert report["clips_dropped"]["static"] == 1 and report["clips_dropped"]["too_short"] == 1
    assert report["captions_non_utf8"] == 1 and report["files_partial"] == []
    # good: 1, noaudio: 1, cut: 2, latin1: 1, long 7 s at max 3 s: 3 (the last is 1 s = min_duration)
    assert report["clips_written"] == 8 == report["this_run"]["clips_written"]
    assert len(report["shards"]) == 3 and all(s["samples"] <= 3 for s in report["shards"])
    assert not list(out.glob("*.tmp")) and (out / "ingest_config.yaml").exists()
    on_disk = json.loads((out / "ingest_report.json").read_text())
    assert on_disk["clips_written"] == 8
    # every dropped clip is named with its reason and detail, not only counted
    dropped = {(Path(d["source"]).name, d["reason"]): d for d in on_disk["dropped"]}
    assert set(dropped) == {("static.mp4", "static"), ("short.mp4", "too_short")}
    assert dropped[("short.mp4", "too_short")]["detail"].startswith("0.50s")
    assert on_disk["refused"] == [] and on_disk["files_ignored"] == {}
    assert on_disk["files_vfr"] == []  # constant-rate sources fill every slot of the grid exactly once
    assert on_disk["audio_padded"] == [] and on_disk["audio_lost"] == []

    clips = _read_shards(out)
    assert len(clips) == 8 and all(set(c) == {"mp4", "json", "txt"} for c in clips.values())
    metas = {k: json.loads(c["json"]) for k, c in clips.items()}
    by_source: dict[str, list[dict]] = {}
    for k, m in metas.items():
        by_source.setdefault(Path(m["source"]).name, []).append({**m, "key": k})
    assert sorted(by_source) == ["cut.mp4", "good.mp4", "latin1.mp4", "long.mp4", "noaudio.mp4"]
    good = by_source["good.mp4"][0]
    assert clips[good["key"]]["txt"].decode() == "a red bar slides right"
    assert good["has_audio"] and good["fps"] == pytest.approx(FPS) and good["motion_score"] > 0.002
    assert (good["width"], good["height"], good["num_frames"]) == (96, 64, 60)
    assert not by_source["noaudio.mp4"][0]["has_audio"]
    latin1 = by_source["latin1.mp4"][0]
    assert clips[latin1["key"]]["txt"].decode() == "caf\ufffd au lait" and latin1["caption_decode_error"]
    # the split happens at the cut (1.0 s = frame 30) within a frame
    first, second = sorted(by_source["cut.mp4"], key=lambda m: m["start_time"])
    assert abs(first["end_time"] - 1.0) <= 1.5 / FPS and abs(second["start_time"] - 1.0) <= 1.5 / FPS
    assert second["starts_at_cut"] and not first["starts_at_cut"]
    assert sorted(round(m["start_time"]) for m in by_source["long.mp4"]) == [0, 3, 6]
    # re-encoded clips decode with their audio window
    clip = media.read_media(clips[good["key"]]["mp4"])
    assert (
        clip.num_frames == 60
        and clip.audio is not None
        and clip.audio.shape[1] == pytest.approx(32000, abs=200)
    )


def test_rerun_writes_nothing_and_interrupted_run_resumes_without_duplicates(raw, tmp_path):
    out = tmp_path / "shards"
    first = run(_cfg(raw, out, "num_workers=0"))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    again = run(_cfg(raw, out, "num_workers=0"))
    # the three unreadable files are tried again (they may have been fixed); nothing else is redone
    assert again["this_run"] == {
        **again["this_run"],
        "files_processed": 3,
        "files_retried": 3,
        "clips_written": 0,
        "shards_written": 0,
    }
    assert {k: v for k, v in again.items() if k != "this_run"} == {
        k: v for k, v in first.items() if k != "this_run"
    }
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")} == stamps
    keys = set(_read_shards(out))

    # simulate a crash after the first shard: later commits never happened, a half-written shard is left
    lines = (out / STATE_FILE).read_text().splitlines()
    shard_line = next(i for i, ln in enumerate(lines) if json.loads(ln)["shard"])
    (out / STATE_FILE).write_text("\n".join(lines[: shard_line + 1]) + '\n{"torn')
    for shard in sorted(out.glob("shard-*.tar"))[1:]:
        shard.unlink()
    (out / "shard-000001.tar.tmp").write_bytes(b"half a tar")
    resumed = run(_cfg(raw, out, "num_workers=0"))
    assert 0 < resumed["this_run"]["clips_written"] < 8
    assert resumed["clips_written"] == 8 and resumed["clips_dropped"] == first["clips_dropped"]
    assert resumed["files_unreadable"] == 3 and resumed["captions_non_utf8"] == 1
    assert not list(out.glob("*.tmp"))
    names = [m.name for s in out.glob("shard-*.tar") for m in tarfile.open(s).getmembers()]
    assert len(names) == len(set(names)) == 3 * 8 and set(_read_shards(out)) == keys


def test_manifest_and_url_list(raw, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        f"path,caption,license\n{raw / 'good.mp4'},from the manifest,cc-by\n"
        f"noaudio.mp4,relative path,cc0\n,no path,x\n{raw / 'missing.mp4'},gone,x\n"
    )
    (tmp_path / "noaudio.mp4").write_bytes((raw / "noaudio.mp4").read_bytes())
    report = run(_cfg(manifest, tmp_path / "m", "num_workers=0"))
    assert report["files_seen"] == 3 and report["clips_written"] == 2 and report["files_unreadable"] == 1
    assert report["refused"] == [
        {"source": "", "where": "list.csv row 3", "reason": "no 'path' (or 'url') value"}
    ]
    clips = _read_shards(tmp_path / "m")
    metas = {json.loads(c["json"])["extra"]["license"]: c for c in clips.values()}
    assert metas["cc-by"]["txt"] == b"from the manifest" and metas["cc0"]["txt"] == b"relative path"

    urls = tmp_path / "urls.txt"
    urls.write_text(f"# comment\npipe:cat {raw / 'good.mp4'}\n{raw / 'noaudio.mp4'}\n")
    report = run(_cfg(urls, tmp_path / "u", "num_workers=0"))
    assert report["clips_written"] == 1 and [r["where"] for r in report["refused"]] == ["urls.txt line 2"]
    report = run(_cfg(urls, tmp_path / "u2", "num_workers=0", "allow_pipe=true"))
    assert report["clips_written"] == 2 and report["files_unreadable"] == 0 and report["refused"] == []


def test_truncated_stream_keeps_the_clips_decoded_before_the_damage(tmp_path):
    # moov in front (faststart), data cut at 80%: opens, decodes ~45 of 96 frames, then fails
    path = tmp_path / "full.mp4"
    with (
        av.open(io.BytesIO(media.encode_mp4(_bar(96), 24))) as src,
        av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as dst,
    ):
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.8)])
    out = process_source(
        SourceItem(str(tmp_path / "cut.mp4")), IngestSettings(max_seconds=1.0, min_duration=0.5)
    )
    assert out.error is None and out.partial_error
    assert 1 <= len(out.clips) < 4 and all(c.meta["num_frames"] >= 12 for c in out.clips)


def test_bad_config_names_the_field(raw, tmp_path):
    with pytest.raises(ValueError, match="clip.max_seconds"):
        run(_cfg(raw, tmp_path / "x", "clip.max_seconds=0"))
    with pytest.raises(ValueError, match="input"):
        run(_cfg(tmp_path / "nope", tmp_path / "x"))
    with pytest.raises(ValueError, match="shard.max_samples"):
        run(_cfg(raw, tmp_path / "x", "shard.max_samples=0"))
    with pytest.raises(ValueError, match="output.audio_channels"):
        run(_cfg(raw, tmp_path / "x", "output.audio_channels=6"))


def test_manifest_rows_never_run_commands(raw, tmp_path, monkeypatch):
    """A row ``pipe:touch FILE; cat good.mp4`` used to run in the shell during ingest."""
    pwned = tmp_path / "pwned"
    command = f"pipe:touch {pwned}; cat {raw / 'good.mp4'}"
    (tmp_path / "list.csv").write_text(f"path,caption\n{command},evil\n{raw / 'noaudio.mp4'},fine\n")
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": command}) + "\n")
    for name in ("list.csv", "list.jsonl"):
        report = run(_cfg(tmp_path / name, tmp_path / f"out_{name}", "num_workers=0", "allow_pipe=true"))
        assert not pwned.exists()
        assert [(r["source"], r["reason"]) for r in report["refused"]] == [
            (command, "a manifest row is a path, never a command (pipe: is refused)")
        ]
    assert report["files_seen"] == 0
    # a local file whose NAME looks like a command is opened as a file, never run (input given relative)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / f"pipe:touch {pwned.name}; cat x.mp4").write_bytes((raw / "good.mp4").read_bytes())
    monkeypatch.chdir(folder)
    report = run(_cfg(".", tmp_path / "out_folder", "num_workers=0"))
    assert not (folder / pwned.name).exists() and report["clips_written"] == 1


def _surround(path: Path, layout: str = "5.1", seconds: float = 2.0, sr: int = 48000) -> None:
    """A 96x64 clip whose AAC track has the channels of ``layout``: a 440 Hz tone in the centre channel
    only, and a 60 Hz tone in the LFE channel (which a downmix leaves out)."""
    names = [c.name for c in av.AudioLayout(layout).channels]
    t = np.arange(int(seconds * sr)) / sr
    audio = np.zeros((len(names), t.size), np.float32)
    audio[names.index("FC")] = 0.6 * np.sin(2 * np.pi * 440 * t)
    audio[names.index("LFE")] = 0.6 * np.sin(2 * np.pi * 60 * t)
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = layout
        for frame in _bar(int(seconds * FPS)):
            for p in v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sr, 0
        for p in [*a.encode(frame), *a.encode(None)]:
            c.mux(p)


def _tone_level(audio: np.ndarray, sr: int, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) / audio.size
    return float(spectrum[round(hz * audio.size / sr)])


@pytest.mark.parametrize("channels", [1, 2])
def test_surround_audio_is_downmixed_not_dropped(tmp_path, channels):
    """A clip with a 5.1 AAC track used to be dropped whole (encode_error: 1 or 2 channels only)."""
    _surround(tmp_path / "surround.mp4")
    out = process_source(SourceItem(str(tmp_path / "surround.mp4")), IngestSettings(audio_channels=channels))
    assert out.dropped == [] and out.error is None and len(out.clips) == 1
    meta = out.clips[0].meta
    assert meta["audio_channels"] == channels and meta["source_audio_layout"] == "5.1"
    clip = media.read_media(out.clips[0].mp4)
    assert clip.audio.shape[0] == channels
    for side in clip.audio:  # the centre is in every output channel, at the same level; LFE is left out
        assert _tone_level(side, clip.sample_rate, 440) > 0.05
        assert _tone_level(side, clip.sample_rate, 60) < 0.01
    if channels == 2:
        np.testing.assert_allclose(clip.audio[0], clip.audio[1], atol=0.02)


def _variable_rate(path: Path, sr: int = 16000) -> None:
    """30 fps for one second, then 10 fps (explicit pts in ms); a white square in the corner of the frame
    at exactly 1.5 s and a click in the sound at 1.5 s."""
    times = [i / 30 for i in range(30)] + [1.0 + i / 10 for i in range(20)]
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        v.codec_context.time_base = Fraction(1, 1000)
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
        for t in times:
            img = np.zeros((64, 96, 3), np.uint8)
            x = int(t * 40) % 80
            img[:, x : x + 8] = (200, 40, 40)
            if round(t * 1000) == 1500:
                img[:16, -16:] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        audio = np.zeros((1, 3 * sr), np.float32)
        audio[0, int(1.5 * sr) : int(1.5 * sr) + 80] = 0.8
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sr, 0
        for p in [*a.encode(frame), *a.encode(None)]:
            c.mux(p)


def test_variable_frame_rate_keeps_picture_and_sound_in_sync(tmp_path):
    """Frames were numbered at the average rate: a marker and a click both at 1.5 s came out 0.46 s apart."""
    _variable_rate(tmp_path / "vfr.mp4")
    out = process_source(SourceItem(str(tmp_path / "vfr.mp4")), IngestSettings(max_seconds=10))
    assert out.error is None and out.dropped == [] and len(out.clips) == 1
    clip = media.read_media(out.clips[0].mp4)
    marked = [i for i, frame in enumerate(clip.video) if frame[:16, -16:].mean() > 200]
    assert marked, "the marker frame was lost"
    click = int(np.argmax(np.abs(clip.audio[0]))) / clip.sample_rate
    assert abs(click - 1.5) < 0.02
    assert abs(marked[0] / clip.fps - click) <= 1.0 / clip.fps
    # 30 fps then 10 fps at an average of 17.9 fps: frames are skipped in the first second, repeated after
    assert out.frames_repeated > 0 and out.frames_skipped > 0


def test_constant_rate_grid_places_frames_by_time():
    grid = ingest._ConstantRate(fps=10.0, max_gap=2.0)
    placed = []
    for name, t in [("a", 0.0), ("b", 0.1), ("c", 0.32), ("d", 0.34), ("e", 0.5), ("back", 0.45)]:
        frames, gap = grid.push(name, t)
        assert not gap
        placed += frames
    placed += grid.flush()
    # nothing at 0.2: b repeats; c (0.32) and d (0.34) share slot 0.3, c is nearer; nothing at 0.4: c repeats;
    # "back" (0.45) goes back in time
    expected = [("a", 0.0), ("b", 0.1), ("b", 0.2), ("c", 0.3), ("c", 0.4), ("e", 0.5)]
    assert [(f, round(t, 3)) for f, t in placed] == expected
    assert (grid.repeated, grid.skipped) == (2, 2)
    grid.push("f", 0.6)
    frames, gap = grid.push("g", 5.0)  # a 4.4 s hole: a new grid starts at g, the clip before ends at f
    assert gap and [f for f, _ in frames] == ["f"] and grid.flush() == [("g", 5.0)]


def test_links_failures_and_long_captions_are_not_lost(raw, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    good = (raw / "good.mp4").read_bytes()
    (folder / "a.mp4").write_bytes(good)
    (folder / "broken.mp4").write_bytes(good[: len(good) // 2])
    os.symlink(folder / "loop.mp4", folder / "loop.mp4")
    out = tmp_path / "out"
    first = run(_cfg(folder, out, "num_workers=0"))
    assert first["clips_written"] == 1 and first["files_unreadable"] == 1
    assert [(Path(r["source"]).name, r["reason"].split(" (")[0]) for r in first["refused"]] == [
        ("loop.mp4", "symlink loop")
    ]
    # a symlink to a file ingested before is a duplicate; the fixed file is retried and now gives its clip
    os.symlink(folder / "a.mp4", folder / "z_link.mp4")
    (folder / "broken.mp4").write_bytes(good)
    second = run(_cfg(folder, out, "num_workers=0"))
    assert second["this_run"]["files_retried"] == 1 and second["this_run"]["clips_written"] == 1
    assert second["clips_written"] == 2 and second["files_unreadable"] == 0
    assert {Path(r["source"]).name: r["reason"] for r in second["refused"]}["z_link.mp4"] == (
        f"duplicate of {folder / 'a.mp4'}"
    )
    assert len(_read_shards(out)) == 2

    # a 200,000-character caption used to abort the whole manifest (csv field limit)
    caption = "a red bar " * 20_000
    manifest = tmp_path / "long.csv"
    manifest.write_text(f'path,caption\n{raw / "good.mp4"},"{caption}"\n{raw / "noaudio.mp4"},short\n')
    report = run(_cfg(manifest, tmp_path / "long", "num_workers=0"))
    assert report["clips_written"] == 2
    assert caption.strip() in {c["txt"].decode() for c in _read_shards(tmp_path / "long").values()}


def test_encode_errors_are_named_in_the_report_and_retried(raw, tmp_path, monkeypatch):
    real = ingest.media.encode_mp4

    def failing(*args, **kwargs):
        raise RuntimeError("the encoder broke")

    monkeypatch.setattr(ingest.media, "encode_mp4", failing)
    out = tmp_path / "out"
    report = run(_cfg(raw / "good.mp4", out, "num_workers=0"))
    on_disk = json.loads((out / "ingest_report.json").read_text())
    assert (
        on_disk["dropped"]
        == report["dropped"]
        == [
            {
                "source": str(raw / "good.mp4"),
                "reason": "encode_error",
                "start": 0.0,
                "end": 2.0,
                "detail": "RuntimeError: the encoder broke",
            }
        ]
    )
    monkeypatch.setattr(ingest.media, "encode_mp4", real)
    again = run(_cfg(raw / "good.mp4", out, "num_workers=0"))
    assert (
        again["clips_written"] == 1 and again["dropped"] == [] and again["clips_dropped"]["encode_error"] == 0
    )


def test_a_clip_kept_without_its_sound_is_named_in_the_report(raw, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise OSError("the audio track is damaged")

    monkeypatch.setattr(ingest.media, "read_audio", failing)
    report = run(_cfg(raw / "good.mp4", tmp_path / "out", "num_workers=0"))
    assert report["clips_written"] == 1
    assert report["audio_lost"] == [
        {
            "source": str(raw / "good.mp4"),
            "clip_index": 0,
            "start": 0.0,
            "end": 2.0,
            "error": "OSError: the audio track is damaged",
        }
    ]


def test_silence_added_past_the_end_of_the_audio_track_is_reported(tmp_path):
    """A 3 s video whose sound stops at 1 s: the clip keeps its sound, padded, and says by how much."""
    media.write_mp4(tmp_path / "short_sound.mp4", _bar(90), FPS, _tone(1.0))
    report = run(_cfg(tmp_path / "short_sound.mp4", tmp_path / "out", "num_workers=0"))
    assert report["clips_written"] == 1
    [padded] = report["audio_padded"]
    assert padded["seconds"] == pytest.approx(2.0, abs=0.05) and (padded["start"], padded["end"]) == (
        0.0,
        3.0,
    )
    [clip] = _read_shards(tmp_path / "out").values()
    assert json.loads(clip["json"])["audio_padded_seconds"] == padded["seconds"]


def test_out_dir_that_is_a_file_is_a_clear_error(raw, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="out_dir = .*file is a file; it must be a folder"):
        run(_cfg(raw, tmp_path / "file"))
    with pytest.raises(ValueError, match="out_dir = .* cannot be created"):
        run(_cfg(raw, tmp_path / "file" / "below"))


@pytest.mark.slow
def test_cli(raw, tmp_path):
    out = tmp_path / "cli"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "data_pipelines.ingest",
            f"input={raw / 'good.mp4'}",
            f"out_dir={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads((out / "ingest_report.json").read_text())["clips_written"] == 1
    assert io.BytesIO((out / "shard-000000.tar").read_bytes()).getbuffer().nbytes > 0
