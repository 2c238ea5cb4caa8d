"""data_pipelines.shard_reader: damaged tar shards are read past their damage, and every loss is counted."""

import tarfile
from collections import Counter
from pathlib import Path

import pytest

from data_pipelines.shard_reader import read_shard
from data_pipelines.shard_stream import ShardStream
from data_pipelines.shard_writer import ShardWriter, write_shard


def _samples(n: int, prefix: str = "s") -> list[tuple[str, dict[str, bytes]]]:
    return [
        (f"{prefix}{i}", {"bin": bytes([i]) * (700 + 37 * i), "json": b"{}", "txt": b"x"}) for i in range(n)
    ]


def _offsets(path: Path) -> dict[str, tuple[int, int]]:
    """member name -> (header offset, data size)."""
    with tarfile.open(path) as tar:
        return {m.name: (m.offset, m.size) for m in tar.getmembers()}


def _corrupt(path: Path, offset: int) -> None:
    """Break the checksum of the header block at ``offset`` (tar then takes it for the end of the archive)."""
    data = bytearray(path.read_bytes())
    data[offset + 100 : offset + 108] = b"garbage!"  # the mode field: the header checksum no longer matches
    path.write_bytes(bytes(data))


def _read(url: str) -> tuple[list[str], Counter, list[str]]:
    skipped, where = Counter(), []

    def on_skip(reason: str, at: str, message: str) -> None:
        skipped[reason] += 1
        where.append(at)

    keys = [s["__key__"] for s in read_shard(url, on_skip)]
    return keys, skipped, where


def test_corrupt_header_mid_shard_costs_one_counted_sample(tmp_path):
    path = write_shard(tmp_path / "s.tar", _samples(8))
    _corrupt(path, _offsets(path)["s2.bin"][0])  # s2's first member (sorted: bin, json, txt)
    keys, skipped, where = _read(str(path))
    assert keys == ["s0", "s1", "s3", "s4", "s5", "s6", "s7"]  # webdataset's reader: s0, s1, silence
    assert skipped == Counter({"corrupt_tar": 1}) and where == [f"{path}:s2"]


def test_corrupt_last_member_of_a_sample(tmp_path):
    path = write_shard(tmp_path / "s.tar", _samples(5))
    _corrupt(path, _offsets(path)["s1.txt"][0])
    keys, skipped, where = _read(str(path))
    assert keys == ["s0", "s2", "s3", "s4"] and skipped == Counter({"corrupt_tar": 1})
    assert where == [f"{path}:s1"]


def test_damage_in_the_first_sample_is_judged_once_an_intact_one_is_seen(tmp_path):
    path = write_shard(tmp_path / "s.tar", _samples(4))
    _corrupt(path, _offsets(path)["s0.json"][0])
    keys, skipped, _ = _read(str(path))
    assert keys == ["s1", "s2", "s3"] and skipped == Counter({"corrupt_tar": 1})


def test_a_whole_lost_sample_between_intact_ones_is_counted_once(tmp_path):
    path = write_shard(tmp_path / "s.tar", _samples(4))
    offsets = _offsets(path)
    start, end = offsets["s1.bin"][0], offsets["s2.bin"][0]
    data = bytearray(path.read_bytes())
    data[start:end] = b"\xff" * (end - start)  # every block of s1, headers and data
    path.write_bytes(bytes(data))
    keys, skipped, where = _read(str(path))
    assert keys == ["s0", "s2", "s3"] and skipped == Counter({"corrupt_tar": 1}) and where == [str(path)]


@pytest.mark.parametrize("cut", ["inside_data", "at_member_boundary"])
def test_truncated_shard_keeps_what_came_before_and_counts_the_cut(tmp_path, cut):
    path = write_shard(tmp_path / "s.tar", _samples(6))
    offset, size = _offsets(path)["s3.json"]
    keep = offset + 512 + 1 if cut == "inside_data" else offset  # in s3.json's data / just before its header
    path.write_bytes(path.read_bytes()[:keep])
    keys, skipped, where = _read(str(path))
    assert keys == ["s0", "s1", "s2"] and skipped == Counter({"truncated_tar": 1})
    assert where == [f"{path}:s3"]  # s3 has only its bin: dropped, not used incomplete


def test_shard_errors_count_once_per_shard(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"<html>not found</html>" * 100)
    good = write_shard(tmp_path / "good.tar", _samples(2))
    for url in (str(junk), str(tmp_path / "missing.tar"), f"pipe:cat {tmp_path / 'missing.tar'}"):
        keys, skipped, _ = _read(url)
        assert keys == [] and skipped == Counter({"shard_error": 1}), url
    assert _read(f"pipe:cat {good}")[:2] == (["s0", "s1"], Counter())
    empty = ShardWriter(tmp_path / "empty.tar").close()
    assert _read(str(empty))[:2] == ([], Counter())  # an empty archive loses nothing


def test_duplicate_members_are_dropped_and_counted(tmp_path):
    path = tmp_path / "dup.tar"
    with ShardWriter(path) as writer:
        for key in ("a", "b", "b", "c"):  # b.txt twice in a row: one sample with two txt members
            writer.write(key, {"txt": b"x"})
    keys, skipped, _ = _read(str(path))
    assert keys == ["a", "c"] and skipped == Counter({"duplicate_member": 1})


def test_shard_stream_counts_tar_damage_with_the_batches(tmp_path):
    path = write_shard(tmp_path / "s.tar", _samples(8))
    _corrupt(path, _offsets(path)["s2.bin"][0])
    stream = ShardStream(
        [str(path)], lambda s, rng: (0, {"key": s["__key__"]}), lambda key: 1, lambda items: items[0]
    )
    batches = list(stream)
    keys = [b["key"] for b in batches if "key" in b]
    assert keys == ["s0", "s1", "s3", "s4", "s5", "s6", "s7"]
    assert sum((Counter(b["_stats"]["skipped"]) for b in batches), Counter()) == Counter({"corrupt_tar": 1})
