"""recaption.run: the batch job end to end, resume, rank sharding, failures and corrupt clips, the CLI."""

import json
import os

import pytest

from data_pipelines.shard_reader import read_shard
from data_pipelines.shard_writer import write_shard
from data_pipelines.synthetic import WorldConfig, write_shards
from recaption.base import Caption, Captioner
from recaption.captioners import GroundTruthCaptioner
from recaption.run import recaption_shards, run
from sora.config import compose


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Six tiny world clips in three shards of two."""
    out = tmp_path_factory.mktemp("world")
    config = WorldConfig(width=32, height=32, duration=0.5, fps=8.0)
    write_shards(config, out, num_clips=6, clips_per_shard=2, num_workers=1, progress=False)
    return out


def _samples(path):
    lost = []
    samples = list(read_shard(str(path), lambda *a: lost.append(a)))
    assert not lost
    return samples


def test_cli_recaptions_every_clip_and_copies_everything_else(shards, tmp_path):
    out = tmp_path / "out"
    cfg = compose(
        "recaption",
        [
            f"input={shards}/shard-*.tar",
            f"out_dir={out}",
            "captioner.form=short",
            "num_workers=2",
            "progress=false",
        ],
    )
    report = run(cfg)
    assert (out / "recaption_config.yaml").exists()
    assert json.loads((out / "recaption_report.json").read_text()) == report
    assert report["samples"] == report["recaptioned"] == report["written"] == 6
    assert report["kept_original"] == report["corrupt"] == 0 and report["shards_written"] == 3
    assert [p["shard"] for p in report["per_shard"]] == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    assert report["captioner"] == {"name": "ground_truth", "options": {"form": "short"}}
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        before, after = _samples(shards / name), _samples(out / name)
        assert [s["__key__"] for s in before] == [s["__key__"] for s in after]
        for old, new in zip(before, after):
            meta_old, meta_new = json.loads(old["json"]), json.loads(new["json"])
            assert new["txt"].decode() == meta_old["captions"]["short"] != old["txt"].decode()
            assert new["mp4"] == old["mp4"] and set(new) == set(old)
            assert meta_new["caption_original"] == old["txt"].decode()
            assert meta_new["captioner"] == {"name": "ground_truth", "version": "1", "form": "short"}
            assert meta_new["captions"] == meta_old["captions"]
            assert {
                k: v for k, v in meta_new.items() if k not in ("caption_original", "captioner")
            } == meta_old


class _Interrupt(Captioner):
    """Captions like the ground truth, then stops the job (as Ctrl-C would) at the clip ``stop_at``."""

    def __init__(self, stop_at: int) -> None:
        self.seen, self.stop_at, self.inner = 0, stop_at, GroundTruthCaptioner()

    def caption_batch(self, clips):
        self.seen += len(clips)
        if self.seen > self.stop_at:
            raise KeyboardInterrupt
        return self.inner.caption_batch(clips)


def test_an_interrupted_job_resumes_without_rewriting_what_it_wrote(shards, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        recaption_shards(
            str(shards / "shard-*.tar"), out, _Interrupt(stop_at=2), batch_size=1, progress=False
        )
    first = out / "shard-000000.tar"
    assert sorted(p.name for p in out.glob("*.tar*")) == ["shard-000000.tar"]  # the half shard was dropped
    stat = os.stat(first)
    (out / "shard-000002.tar.tmp").write_bytes(b"half a shard from a killed run")
    report = recaption_shards(str(shards / "shard-*.tar"), out, GroundTruthCaptioner(), progress=False)
    assert os.stat(first).st_ino == stat.st_ino and os.stat(first).st_mtime_ns == stat.st_mtime_ns
    assert report["shards_skipped"] == 1 and report["shards_written"] == 2
    assert [p["status"] for p in report["per_shard"]] == ["skipped", "written", "written"]
    assert report["samples"] == report["recaptioned"] == 6  # counts of the skipped shard come from its report
    assert not list(out.glob("*.tmp"))
    assert len(_samples(out / "shard-000002.tar")) == 2


def test_two_ranks_cover_every_shard_exactly_once(shards, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    second = recaption_shards(str(shards / "shard-*.tar"), out, GroundTruthCaptioner(), progress=False)
    first = recaption_shards(
        str(shards / "shard-*.tar"), out, GroundTruthCaptioner(), rank=0, world_size=2, progress=False
    )
    assert [p["shard"] for p in first["per_shard"]] == ["shard-000000.tar", "shard-000002.tar"]
    assert [p["shard"] for p in second["per_shard"]] == ["shard-000001.tar"]
    assert first["samples"] + second["samples"] == 6
    assert sorted(p.name for p in out.glob("recaption_report*")) == [
        "recaption_report.rank0.json",
        "recaption_report.rank1.json",
    ]
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size\)"):
        recaption_shards(str(shards / "shard-*.tar"), out, GroundTruthCaptioner(), rank=2, world_size=2)


class _Picky(Captioner):
    """Ground truth, except: raises on one clip, answers "" on another and non-UTF-8 on a third."""

    name = "picky"

    def __init__(self, raise_on: str, empty_on: str, garbage_on: str) -> None:
        self.raise_on, self.empty_on, self.garbage_on = raise_on, empty_on, garbage_on

    def caption_batch(self, clips):
        out = []
        for clip in clips:
            if clip.key == self.raise_on:
                raise RuntimeError("the model crashed")
            text = {self.empty_on: "", self.garbage_on: "caf\udce9"}.get(clip.key, f"clip {clip.key}")
            out.append(Caption(text))
        return out


def test_failed_clips_keep_their_caption_and_corrupt_clips_are_named(shards, tmp_path):
    samples = [s for name in ("shard-000000.tar", "shard-000001.tar") for s in _samples(shards / name)]
    broken = {"__key__": "broken", "mp4": b"\x00\x00\x00\x18ftypmp42 not a video", "json": b"{}", "txt": b"x"}
    bad_json = {**samples[3], "__key__": "badjson", "json": b"{not json"}
    mixed = [{**samples[0], "cls": b"7"}, broken, samples[1], samples[2], bad_json, samples[3]]
    src = tmp_path / "in" / "mixed.tar"
    write_shard(src, mixed)
    keys = [s["__key__"] for s in samples]
    captioner = _Picky(raise_on=keys[1], empty_on=keys[2], garbage_on=keys[3])
    report = recaption_shards(str(src), tmp_path / "out", captioner, batch_size=8, progress=False)
    assert report["samples"] == 6 and report["written"] == 4 and report["recaptioned"] == 1
    assert report["kept_original"] == 3
    assert report["kept_original_reasons"] == {
        "caption_error": 0,
        "exception": 1,
        "empty": 1,
        "not_utf8": 1,
        "bad_output": 0,
    }
    assert {(f["key"], f["reason"]) for f in report["failures"]} == {
        (keys[1], "exception"),
        (keys[2], "empty"),
        (keys[3], "not_utf8"),
    }
    assert report["corrupt"] == 2 and report["corrupt_reasons"] == {"bad_json": 1, "decode_error": 1}
    assert {c["where"].rsplit(":", 1)[-1] for c in report["corrupt_samples"]} == {"broken", "badjson"}
    written = {s["__key__"]: s for s in _samples(tmp_path / "out" / "mixed.tar")}
    assert list(written) == keys
    assert written[keys[0]]["txt"] == f"clip {keys[0]}".encode()
    assert written[keys[0]]["cls"] == b"7" and written[keys[0]]["mp4"] == samples[0]["mp4"]  # copied as is
    for key, original in zip(keys[1:], samples[1:]):  # failed: txt and json exactly as they were
        assert written[key]["txt"] == original["txt"] and written[key]["json"] == original["json"]


def test_when_missing_captions_only_clips_without_a_caption(shards, tmp_path):
    samples = _samples(shards / "shard-000000.tar")
    src = tmp_path / "in" / "partly.tar"
    write_shard(src, [{**samples[0], "txt": b""}, samples[1]])
    report = recaption_shards(str(src), tmp_path / "out", GroundTruthCaptioner(form="short"), when="missing")
    assert report["recaptioned"] == 1 and report["already_captioned"] == 1
    first, second = _samples(tmp_path / "out" / "partly.tar")
    assert first["txt"].decode() == json.loads(samples[0]["json"])["captions"]["short"]
    assert json.loads(first["json"])["caption_original"] == ""
    assert second["txt"] == samples[1]["txt"] and second["json"] == samples[1]["json"]


def test_a_missing_model_folder_stops_the_job_before_any_work(shards, tmp_path):
    out = tmp_path / "out"
    cfg = compose(
        "recaption",
        [
            f"input={shards}/shard-*.tar",
            f"out_dir={out}",
            "captioner=hf",
            f"captioner.model_path={tmp_path}/nope",
        ],
    )
    with pytest.raises(ValueError, match="captioner hf: model_path .* is not a folder"):
        run(cfg)
    assert not out.exists()
    with pytest.raises(ValueError, match="unknown name 'vlm'"):
        recaption_shards(str(shards / "shard-*.tar"), out, {"name": "vlm", "options": {}})
    with pytest.raises(ValueError, match="out_dir .* holds the input"):
        recaption_shards(str(shards / "shard-000000.tar"), shards, GroundTruthCaptioner())


def test_a_captioner_that_cannot_be_built_in_the_workers_fails_the_job_with_its_reason(shards, tmp_path):
    spec = {
        "name": "ground_truth",
        "options": {"form": "long"},
    }  # the registry's check passes, the class refuses
    for workers in (0, 2):
        with pytest.raises(
            ValueError, match="could not be built: ValueError: ground_truth captioner: form must be"
        ):
            recaption_shards(
                str(shards / "shard-*.tar"), tmp_path / f"out{workers}", spec, num_workers=workers
            )
    assert not list((tmp_path / "out2").glob("*.tar"))
