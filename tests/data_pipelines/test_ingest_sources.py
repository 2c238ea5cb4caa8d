"""data_pipelines.ingest_sources: manifest rows are data; duplicates and broken links are reported."""

import json
import os
from pathlib import Path

import pytest

from data_pipelines.ingest_sources import dedupe, identity, list_sources

EXTS = ["mp4"]


def _reasons(listing) -> dict[str, str]:
    return {Path(r["source"]).name if r["source"] else r["where"]: r["reason"] for r in listing.refused}


def test_manifest_pipe_and_other_schemes_are_refused_with_their_row(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    csv_manifest = tmp_path / "list.csv"
    csv_manifest.write_text(
        "path,caption\n"
        "a.mp4,kept\n"
        f"pipe:touch {tmp_path / 'pwned'}; cat a.mp4,evil\n"
        "rtmp://host/live,stream\n"
        "https://example.org/v.mp4,remote\n"
    )
    listing = list_sources(str(csv_manifest), EXTS)
    assert [(i.source, i.kind) for i in listing.items] == [
        (str(tmp_path / "a.mp4"), "path"),
        ("https://example.org/v.mp4", "url"),
    ]
    refused = {r["where"]: r["reason"] for r in listing.refused}
    assert refused == {
        "list.csv row 2": "a manifest row is a path, never a command (pipe: is refused)",
        "list.csv row 3": "URL scheme rtmp:// is not allowed in a manifest",
    }
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"path": "pipe:echo hi", "caption": "c"}) + "\n")
    assert [r["reason"] for r in list_sources(str(jsonl), EXTS).refused] == [
        "a manifest row is a path, never a command (pipe: is refused)"
    ]


def test_url_list_runs_pipe_only_when_allowed(tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("pipe:cat a.mp4\nrtmp://host/live\nb.mp4\n")
    listing = list_sources(str(urls), EXTS)
    assert [(i.source, i.kind) for i in listing.items] == [
        ("rtmp://host/live", "url"),
        (str(tmp_path / "b.mp4"), "path"),
    ]
    assert listing.refused == [
        {
            "source": "pipe:cat a.mp4",
            "where": "urls.txt line 1",
            "reason": "pipe: commands run only with allow_pipe=true",
        }
    ]
    allowed = list_sources(str(urls), EXTS, allow_pipe=True)
    assert [(i.source, i.kind) for i in allowed.items][0] == (
        "pipe:cat a.mp4",
        "pipe",
    ) and not allowed.refused


def test_bad_rows_are_refused_and_the_rest_is_kept(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    long_caption = "word " * 40_000  # 200,000 characters: over the csv module's default field limit
    manifest = tmp_path / "list.csv"
    manifest.write_text(f'path,caption\na.mp4,"{long_caption}"\n,no path\n')
    listing = list_sources(str(manifest), EXTS)
    assert len(listing.items) == 1 and listing.items[0].caption == long_caption
    assert [r["reason"] for r in listing.refused] == ["no 'path' (or 'url') value"]

    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(
        '{"path": "a.mp4"}\n{"path": "b.mp4", broken\n[1, 2]\n{"path": 3}\n{"path": "c.mp4", "caption": 5}\n'
    )
    listing = list_sources(str(jsonl), EXTS)
    assert [Path(i.source).name for i in listing.items] == ["a.mp4"]
    reasons = [(r["where"], r["reason"].split(":")[0]) for r in listing.refused]
    assert reasons == [
        ("list.jsonl line 2", "invalid JSON"),
        ("list.jsonl line 3", "a manifest row must be an object with a 'path'"),
        ("list.jsonl line 4", "'path' must be a string, got int"),
        ("list.jsonl line 5", "'caption' must be a string, got int"),
    ]


def test_folder_reports_links_it_cannot_follow_and_lists_each_file_once(tmp_path):
    root = tmp_path / "raw"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x")
    (root / "b.mp4").write_bytes(b"x")
    os.symlink(root / "b.mp4", root / "link_to_b.mp4")
    os.symlink(root / "loop.mp4", root / "loop.mp4")
    os.symlink(root / "gone", root / "dangling.mp4")
    os.symlink(root / "sub", root / "linked_dir")  # its files are found once, through one of the two names
    os.symlink(root, root / "sub" / "up")  # a loop of folders
    (root / "notes.jpg").write_bytes(b"x")
    (root / "b.txt").write_text("a sidecar caption")
    listing = list_sources(str(root), EXTS)
    dedupe(listing, {})
    names = sorted(str(Path(i.source).relative_to(root)) for i in listing.items)
    assert names in (["b.mp4", "linked_dir/a.mp4"], ["b.mp4", "sub/a.mp4"])
    reasons = _reasons(listing)
    assert reasons["loop.mp4"].startswith("symlink loop")
    assert reasons["dangling.mp4"].startswith("broken symlink")
    assert reasons["link_to_b.mp4"] == f"duplicate of {root / 'b.mp4'}"
    assert "folder already listed" in reasons["up"]
    assert dict(listing.ignored) == {".jpg": 1}


def test_dedupe_against_files_ingested_before(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "a.mp4", tmp_path / "z_link.mp4")
    listing = list_sources(str(tmp_path), EXTS)
    done = {identity(str(tmp_path / "a.mp4")): str(tmp_path / "a.mp4")}
    dedupe(listing, done)
    assert [i.source for i in listing.items] == [str(tmp_path / "a.mp4")]  # itself: skipped or retried later
    assert [r["reason"] for r in listing.refused] == [f"duplicate of {tmp_path / 'a.mp4'}"]


def test_missing_input_and_unknown_type_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        list_sources(str(tmp_path / "nope"), EXTS)
    (tmp_path / "x.pdf").write_bytes(b"x")
    with pytest.raises(ValueError, match="is not a folder, .csv/.jsonl manifest"):
        list_sources(str(tmp_path / "x.pdf"), EXTS)
