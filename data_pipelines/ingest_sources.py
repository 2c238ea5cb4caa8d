"""What :mod:`data_pipelines.ingest` reads: the list of sources, and every listed thing it refuses, with why.

Inputs are data, never commands (DESIGN.md). A folder and a ``.csv``/``.jsonl`` manifest name local files;
a manifest row may also be an ``http``/``https``/``ftp`` URL (its bytes are fetched and parsed as a video).
A manifest row is never run: ``pipe:`` and other URL schemes are refused. Only a ``.txt`` URL list, which
the user writes as a list of commands and URLs, may hold ``pipe:cmd`` lines, and they run only when the
user opts in with ``allow_pipe=true``; other ffmpeg URLs (``rtmp://``...) in a ``.txt`` list are opened by
ffmpeg as before.

Nothing listed is dropped silently: a refused row, a broken or looping symlink, a folder that cannot be
read, a second name for a file already listed or already ingested (symlinks, the same row twice) each
become one ``{"source", "where", "reason"}`` record in ``refused``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FETCHED_SCHEMES = ("http", "https", "ftp")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default is 131072 characters; a long caption is still data


@dataclass
class SourceItem:
    """One input video with its manifest fields.

    ``kind``: ``"path"`` (a local file, opened as a file whatever its name), ``"url"`` (fetched if
    http/https/ftp, else opened by ffmpeg) or ``"pipe"`` (a shell command, only from an opted-in URL list).
    """

    source: str
    caption: str | None = None
    caption_replaced: bool = False
    extra: dict = field(default_factory=dict)
    kind: str = "path"
    where: str = ""  # where it was listed: "list.csv row 3", "urls.txt line 2", a folder


@dataclass
class Listing:
    """The sources to ingest, the listed things refused (with reasons) and the other files of a folder."""

    items: list[SourceItem]
    refused: list[dict] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)  # folder files of other types, by extension

    def refuse(self, source: str, where: str, reason: str) -> None:
        self.refused.append({"source": source, "where": where, "reason": reason})


def decode_text(raw: bytes) -> tuple[str, bool]:
    """UTF-8 text, or the U+FFFD-replaced decoding and ``True`` when the bytes are not valid UTF-8."""
    try:
        return raw.decode("utf-8").strip(), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace").strip(), True


def url_scheme(src: str) -> str | None:
    """``"http"`` for ``http://...``, ``None`` for a path."""
    m = _SCHEME.match(src)
    return m.group(1).lower() if m else None


def list_sources(input_path: str, extensions: list[str], allow_pipe: bool = False) -> Listing:
    """The videos to ingest from a folder, a manifest, a URL list or one video file; see the module doc."""
    path, exts = Path(input_path), {"." + e.lower().lstrip(".") for e in extensions}
    if path.is_dir():
        return _folder(path, exts)
    if not path.exists():
        raise ValueError(f"ingest config: input = {input_path} does not exist")
    if path.suffix.lower() in exts:
        return Listing([SourceItem(str(path), where=str(path))])
    if path.suffix.lower() == ".txt":
        return _url_list(path, allow_pipe)
    if path.suffix.lower() in (".csv", ".jsonl"):
        return _manifest(path)
    raise ValueError(
        f"ingest config: input = {input_path} is not a folder, .csv/.jsonl manifest, "
        f".txt URL list or video ({sorted(exts)})"
    )


def _not_a_file(p: Path) -> str:
    """Why a listed name with a video extension is not a regular file."""
    try:
        p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 raises RuntimeError for a loop
        return f"symlink loop ({p.name} -> {os.readlink(p)})"
    except OSError as exc:
        if p.is_symlink():
            loop = getattr(exc, "errno", None) == 40  # ELOOP
            kind = "symlink loop" if loop else "broken symlink"
            return f"{kind} ({p.name} -> {os.readlink(p)})"
        return f"cannot stat: {exc}"
    return "not a regular file (a fifo, socket or device is never opened)"


def _folder(root: Path, exts: set[str]) -> Listing:
    """Every file with a video extension under ``root``, following symlinked folders once each."""
    listing = Listing([])
    walked: dict[str, str] = {}

    def unreadable(exc: OSError) -> None:
        listing.refuse(str(exc.filename), str(root), f"cannot list folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in walked:
            dirnames[:] = []  # a symlink to a folder listed already (or to one of its parents: a loop)
            listing.refuse(dirpath, str(root), f"folder already listed as {walked[real]}")
            continue
        walked[real] = dirpath
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            ext = p.suffix.lower()
            if ext not in exts:
                if ext != ".txt":  # .txt files are caption sidecars
                    listing.ignored[ext or "(no extension)"] += 1
                continue
            if not p.is_file():
                listing.refuse(str(p), str(root), _not_a_file(p))
                continue
            listing.items.append(SourceItem(str(p), where=str(root)))
    return listing


def _url_list(path: Path, allow_pipe: bool) -> Listing:
    listing = Listing([])
    for n, line in enumerate(decode_text(path.read_bytes())[0].splitlines(), 1):
        src, where = line.strip(), f"{path.name} line {n}"
        if not src or src.startswith("#"):
            continue
        if src.startswith("pipe:"):
            if allow_pipe:
                listing.items.append(SourceItem(src, kind="pipe", where=where))
            else:
                listing.refuse(src, where, "pipe: commands run only with allow_pipe=true")
        elif url_scheme(src):
            listing.items.append(SourceItem(src, kind="url", where=where))
        else:
            listing.items.append(SourceItem(str(path.parent / src), where=where))
    return listing


def _manifest_rows(path: Path, listing: Listing) -> list[tuple[str, object]]:
    """(where, row) for each parsable row; a row that cannot be parsed is refused, the others are kept."""
    text, _ = decode_text(path.read_bytes())
    rows: list[tuple[str, object]] = []
    if path.suffix.lower() == ".csv":
        old_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
        try:
            reader = csv.DictReader(io.StringIO(text))
            for n in itertools.count(1):
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    listing.refuse("", f"{path.name} row {n}", f"unreadable csv row: {exc}")
                    continue
                rows.append((f"{path.name} row {n}", row))
        finally:
            csv.field_size_limit(old_limit)
        return rows
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path.name} line {n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            listing.refuse(line[:200], f"{path.name} line {n}", f"invalid JSON: {exc}")
    return rows


def _manifest(path: Path) -> Listing:
    """Rows of a ``.csv``/``.jsonl`` manifest: a path (or an http/https/ftp URL), never a command."""
    listing = Listing([])
    for where, row in _manifest_rows(path, listing):
        if not isinstance(row, dict):
            listing.refuse(str(row)[:200], where, "a manifest row must be an object with a 'path'")
            continue
        src = row.pop("path", None) or row.pop("url", None)
        caption = row.pop("caption", None)
        if not src:
            listing.refuse("", where, "no 'path' (or 'url') value")
        elif not isinstance(src, str):
            listing.refuse(str(src)[:200], where, f"'path' must be a string, got {type(src).__name__}")
        elif caption is not None and not isinstance(caption, str):
            listing.refuse(src, where, f"'caption' must be a string, got {type(caption).__name__}")
        elif src.startswith("pipe:"):
            listing.refuse(src, where, "a manifest row is a path, never a command (pipe: is refused)")
        elif url_scheme(src) and url_scheme(src) not in FETCHED_SCHEMES:
            listing.refuse(src, where, f"URL scheme {url_scheme(src)}:// is not allowed in a manifest")
        else:
            replaced = isinstance(caption, str) and "\ufffd" in caption
            kind = "url" if url_scheme(src) else "path"
            src = src if kind == "url" else str(path.parent / src)
            listing.items.append(SourceItem(src, caption, replaced, dict(row), kind=kind, where=where))
    return listing


def identity(source: str, kind: str = "path") -> str:
    """What makes two sources the same: the resolved file of a path (symlinks followed), else the URL."""
    return os.path.realpath(source) if kind == "path" else source


def dedupe(listing: Listing, done: dict[str, str]) -> None:
    """Refuse every source that names a file listed before it, or one already ingested (``done``: identity
    -> source of the files in the state). A source ingested before under the same name stays (it is
    skipped, or retried if it failed)."""
    seen, names, keep = dict(done), set(), []
    for item in listing.items:
        first = seen.setdefault(identity(item.source, item.kind), item.source)
        if item.source in names or first != item.source:
            listing.refuse(item.source, item.where, f"duplicate of {first}")
            continue
        names.add(item.source)
        keep.append(item)
    listing.items = keep
