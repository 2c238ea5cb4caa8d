"""data_pipelines.shard_writer: the one shard writer; atomic, byte-reproducible, read back by every reader."""

import re
import tarfile
import time
from pathlib import Path

import pytest
import webdataset as wds

from data_pipelines.shard_reader import read_shard
from data_pipelines.shard_writer import ShardWriter, member_size, write_shard

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [("b0", {"txt": "a caption", "json": b'{"fps": 24}', "mp4": b"\x00" * 700}), ("a1", {"txt": b"x"})]


def test_same_samples_give_the_same_bytes_at_any_time(tmp_path):
    first = write_shard(tmp_path / "one.tar", SAMPLES).read_bytes()
    time.sleep(1.1)  # a timestamp in the tar would now differ
    assert write_shard(tmp_path / "two.tar", SAMPLES).read_bytes() == first
    with tarfile.open(tmp_path / "one.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["b0.json", "b0.mp4", "b0.txt", "a1.txt"]  # extensions sorted
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


def test_atomic_rename_and_abort(tmp_path):
    path = tmp_path / "shard-000000.tar"
    writer = ShardWriter(path)
    added = writer.write("k", {"txt": "hello"})
    assert not path.exists() and writer.tmp_path.exists() and added == member_size(b"hello") == 1024
    assert writer.size == 1024 and writer.close() == path and path.exists() and not writer.tmp_path.exists()
    with pytest.raises(RuntimeError, match="crash"), ShardWriter(tmp_path / "crash.tar") as w:
        w.write("k", {"txt": "x"})
        raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]  # no crash.tar, no .tmp


def test_read_back_by_webdataset_and_the_shard_reader(tmp_path):
    path = write_shard(tmp_path / "s.tar", [{"__key__": "k0", "txt": "x", "__url__": "ignored"}, *SAMPLES])
    ours = list(read_shard(str(path), lambda *a: pytest.fail(f"unexpected loss {a}")))
    theirs = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in ours] == [s["__key__"] for s in theirs] == ["k0", "b0", "a1"]
    assert ours[1]["txt"] == theirs[1]["txt"] == b"a caption" and ours[1]["mp4"] == b"\x00" * 700


def test_bad_samples_are_refused(tmp_path):
    with ShardWriter(tmp_path / "s.tar") as writer:
        with pytest.raises(ValueError, match="without a dot"):
            writer.write("a.b", {"txt": "x"})  # readers would split "a" / "b.txt"
        with pytest.raises(ValueError, match="no files"):
            writer.write("a", {})
    with pytest.raises(ValueError, match="already closed"):
        writer.write("a", {"txt": "x"})


def test_the_project_writes_tar_shards_only_through_shard_writer():
    # issue #16: four writers (latents, ingest, synthetic, benchmark) plus two in tests had drifted apart
    writing = re.compile(r"TarWriter\(|tarfile\.open\([^)\n]*[\"']w|\.addfile\(")
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("data_pipelines", "benchmarks", "sora", "recaption", "eval", "tests")
        for p in (ROOT / folder).rglob("*.py")
        if p.name not in ("shard_writer.py", "test_shard_writer.py") and writing.search(p.read_text())
    ]
    assert offenders == []
