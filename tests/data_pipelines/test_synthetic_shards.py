"""data_pipelines.synthetic CLI and shards: webdataset round trip, preview, summary, resume, workers."""

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from data_pipelines.synthetic import WorldConfig, clip_seed, generate_clip, write_shards
from data_pipelines.synthetic.__main__ import run, world_config
from sora.config import compose
from sora.media import read_media


def assert_same_samples(a: Path, b: Path) -> None:
    """Two shards hold the same samples: keys, metadata and captions byte for byte, same pictures and sound.

    mp4 bytes are not compared: ``sora.media.encode_mp4`` lets PyAV convert RGB to YUV inside the encoder,
    which is not bit-reproducible (about 1 encode in 5 differs slightly), so the decoded clips are compared.
    """
    left = list(wds.WebDataset(str(a), shardshuffle=False))
    right = list(wds.WebDataset(str(b), shardshuffle=False))
    assert [s["__key__"] for s in left] == [s["__key__"] for s in right]
    for x, y in zip(left, right):
        assert x["json"] == y["json"] and x["txt"] == y["txt"]
        mx, my = read_media(x["mp4"]), read_media(y["mp4"])
        assert np.abs(mx.video.astype(int) - my.video).mean() < 1.0
        np.testing.assert_allclose(mx.audio, my.audio, atol=1e-3)


def _cfg(out_dir, *overrides):
    return compose(
        "synthetic",
        [f"out_dir={out_dir}", "num_clips=6", "clips_per_shard=4", "seed=7", "preview_clips=3", *overrides],
    )


def test_cli_writes_readable_shards_preview_and_summary(tmp_path):
    out = tmp_path / "data"
    summary = run(_cfg(out, "num_workers=2"))
    shards = sorted(out.glob("shard-*.tar"))
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert not list(out.glob("*.tmp"))
    assert (out / "config.yaml").exists() and (out / "preview.png").stat().st_size > 0
    assert (out / "preview.gif").exists()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["written_clips"] == 6 and summary["failed_clips"] == 0
    assert summary["families"] == {"fall": 2, "throw": 1, "slide": 1, "collide": 1, "static": 1}
    assert summary["clips_per_second"] > 0

    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert len(samples) == 6
    world = world_config(_cfg(out))
    for index, sample in enumerate(samples):
        assert set(sample) >= {"__key__", "mp4", "json", "txt"}
        meta = json.loads(sample["json"])
        assert sample["txt"].decode() == meta["caption"]
        assert meta["seed"] == clip_seed(7, index) and sample["__key__"].startswith(f"{index:08d}_")
        media = read_media(sample["mp4"])
        assert media.video.shape == (world.num_frames, world.height, world.width, 3)
        assert media.audio.shape == (1, round(meta["duration"] * 16000))
        assert media.metadata["seed"] == meta["seed"]
    # a sample's metadata regenerates the very same clip
    again = generate_clip(world, meta["seed"], meta["family"])
    assert again.meta == meta


def test_resume_skips_complete_shards_and_redoes_missing_ones(tmp_path):
    out = tmp_path / "data"
    run(_cfg(out, "num_workers=1", "preview=false"))
    first, second = out / "shard-000000.tar", out / "shard-000001.tar"
    original = second.rename(tmp_path / "original.tar")
    second.write_bytes(original.read_bytes())
    summary = run(_cfg(out, "num_workers=1", "preview=false"))
    assert summary["skipped_shards"] == 2 and summary["written_clips"] == 0
    second.unlink()
    (out / "shard-000001.tar.tmp").write_bytes(b"half a shard from a crashed run")
    mtime = first.stat().st_mtime_ns
    summary = run(_cfg(out, "num_workers=1", "preview=false"))
    assert summary["skipped_shards"] == 1 and summary["written_clips"] == 2
    assert first.stat().st_mtime_ns == mtime  # untouched
    assert_same_samples(second, original)  # redone identically
    assert not (out / "shard-000001.tar.tmp").exists()


def test_output_is_identical_with_one_or_two_workers(tmp_path):
    config = WorldConfig(families=("fall", "collide"))
    one = write_shards(
        config, tmp_path / "one", num_clips=5, seed=3, clips_per_shard=2, num_workers=1, progress=False
    )
    two = write_shards(
        config, tmp_path / "two", num_clips=5, seed=3, clips_per_shard=2, num_workers=2, progress=False
    )
    assert (
        [p.name for p in one]
        == [p.name for p in two]
        == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    )
    for a, b in zip(one, two):
        assert_same_samples(a, b)


def test_bad_cli_values_are_reported(tmp_path):
    with pytest.raises(ValueError, match="fps must be > 0"):
        run(_cfg(tmp_path, "world.fps=0"))
    with pytest.raises(ValueError, match="families: unknown scene family 'bounce'"):
        run(_cfg(tmp_path, "families=[fall,bounce]"))
    with pytest.raises(ValueError, match="clips_per_shard must be an integer >= 1"):
        write_shards(WorldConfig(), tmp_path, num_clips=2, clips_per_shard=0)


def test_a_failing_clip_is_counted_not_fatal(tmp_path, monkeypatch):
    import data_pipelines.synthetic.shards as shards

    real = shards.generate_clip

    def flaky(config, seed, family=None):
        if seed == clip_seed(0, 1):
            raise RuntimeError("simulated failure")
        return real(config, seed, family)

    monkeypatch.setattr(shards, "generate_clip", flaky)
    report = shards.generate_shards(
        WorldConfig(), tmp_path, num_clips=3, seed=0, clips_per_shard=8, num_workers=1, progress=False
    )
    assert report.written_clips == 2
    assert report.failures == [
        {"index": 1, "seed": clip_seed(0, 1), "reason": "RuntimeError: simulated failure"}
    ]
    assert len(list(wds.WebDataset(str(report.paths[0]), shardshuffle=False))) == 2


def test_clip_seeds_are_distinct_and_stable():
    seeds = [clip_seed(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert clip_seed(0, 5) == clip_seed(0, 5) != clip_seed(1, 5)
    assert np.iinfo(np.int64).max >= max(seeds)
