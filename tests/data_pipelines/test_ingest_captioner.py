"""data_pipelines.ingest with captioner=: clips are captioned before they are written, failures counted."""

import json

import numpy as np
import pytest

from data_pipelines import ingest
from data_pipelines.shard_reader import read_shard
from recaption.base import Caption, Captioner
from sora import media
from sora.config import compose


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Two one-second clips of a moving bar: one with a sidecar caption, one without."""
    d = tmp_path_factory.mktemp("raw")
    video = np.zeros((24, 64, 64, 3), np.uint8)
    for i in range(24):
        video[i, :, 2 * i : 2 * i + 8] = (200, 40, 40)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000))[None].astype(np.float32)
    media.write_mp4(d / "captioned.mp4", video, 24, tone)
    (d / "captioned.txt").write_text("a red bar slides right")
    media.write_mp4(d / "bare.mp4", video[:, :, ::-1], 24, tone)
    return d


def _ingest(raw, out, *overrides):
    cfg = compose("ingest", [f"input={raw}", f"out_dir={out}", "num_workers=0", *overrides])
    report = ingest.run(cfg)
    clips = {}
    for shard in sorted(out.glob("shard-*.tar")):
        for s in read_shard(str(shard), lambda *a: pytest.fail(f"lost {a}")):
            meta = json.loads(s["json"])
            clips[meta["source"].rsplit("/", 1)[-1]] = (s["txt"].decode(), meta, s["mp4"])
    return report, clips


class _Describer(Captioner):
    """Says how many frames and how much sound it was given (so the test sees the decoded clip arrived)."""

    name = "describer"

    def caption_batch(self, clips):
        return [
            Caption(
                f"{c.frames.shape[0]} frames, {c.audio.shape[1] if c.audio is not None else 0} samples",
                forms={"short": "a bar"},
            )
            for c in clips
        ]


def test_clips_without_a_caption_get_one_and_the_json_says_which_captioner(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "build_captioner", lambda name, **options: _Describer())
    report, clips = _ingest(raw, tmp_path / "out", "captioner=passthrough")
    assert report["captions_generated"] == 1 and report["caption_failures"] == 0
    assert report["clips_uncaptioned"] == 0 and report["captions_missing"] == 1
    text, meta, mp4 = clips["bare.mp4"]
    assert text == "24 frames, 16000 samples"
    assert meta["caption_original"] == "" and meta["captioner"] == {"name": "describer", "version": "1"}
    assert meta["captions"] == {"short": "a bar", "describer": text}
    assert media.read_media(mp4).num_frames == 24
    text, meta, _ = clips["captioned.mp4"]  # when=missing: a clip with a caption is left alone
    assert text == "a red bar slides right" and "captioner" not in meta


def test_when_always_recaptions_every_clip_and_keeps_the_original(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "build_captioner", lambda name, **options: _Describer())
    report, clips = _ingest(raw, tmp_path / "out", "captioner=passthrough", "captioner.when=always")
    assert report["captions_generated"] == 2
    text, meta, _ = clips["captioned.mp4"]
    assert text.endswith("samples") and meta["caption_original"] == "a red bar slides right"


def test_a_failing_captioner_keeps_the_captions_and_the_report_names_each_clip(raw, tmp_path):
    report, clips = _ingest(raw, tmp_path / "out", "captioner=ground_truth", "captioner.when=always")
    assert report["captions_generated"] == 0 and report["caption_failures"] == 2
    assert {c["source"].rsplit("/", 1)[-1] for c in report["caption_failed"]} == {"bare.mp4", "captioned.mp4"}
    assert {c["reason"] for c in report["caption_failed"]} == {"caption_error"}
    assert "no synthetic-world ground truth" in report["caption_failed"][0]["message"]
    assert report["clips_uncaptioned"] == 1 and report["clips_written"] == 2
    assert clips["captioned.mp4"][0] == "a red bar slides right" and clips["bare.mp4"][0] == ""
    assert "captioner" not in clips["bare.mp4"][1]


def test_bad_captioner_settings_stop_ingest_before_any_work(raw, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="captioner hf: model_path .* is not a folder"):
        _ingest(raw, out, "captioner=hf", f"captioner.model_path={tmp_path}/none")
    with pytest.raises(ValueError, match="captioner.when must be missing or always"):
        _ingest(raw, out, "captioner=ground_truth", "captioner.when=sometimes")
    assert not out.exists()
