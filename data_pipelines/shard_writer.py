"""The one webdataset shard writer of the project: atomic, byte-reproducible tar shards.

Every shard the project writes goes through :class:`ShardWriter` (the synthetic world, ingest, the latent
cache, the data-loader benchmark, the tests): members go to ``<path>.tmp``, renamed to ``path`` when the shard
is closed, so a shard on disk is always complete and an interrupted job leaves only ``*.tmp`` files behind.
Members carry no time, owner or host: mtime 0, mode 0o644, uid/gid 0, empty user and group names, and the
files of a sample are written in sorted extension order, so the same samples always give the same bytes.

A sample ``key`` with files ``{"mp4": b"...", "json": b"...", "txt": "..."}`` becomes the members
``key.json``, ``key.mp4``, ``key.txt`` (str values are UTF-8 encoded), which is what webdataset and
:func:`data_pipelines.shard_reader.read_shard` read back as ``{"__key__": key, "json": ..., ...}``.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

BLOCK = 512  # tar's block size: each member takes one header block plus its data rounded up to blocks


def member_size(data: bytes) -> int:
    """Bytes a member of ``data`` takes in a tar (header + data padded to whole blocks)."""
    return BLOCK + -(-len(data) // BLOCK) * BLOCK


class ShardWriter:
    """Writes samples into one tar shard, atomically (``<path>.tmp`` renamed on :meth:`close`).

    Use as a context manager: an exception inside the block removes the ``.tmp`` file and writes nothing.
    ``size`` is the shard's size so far in bytes (without the end-of-archive blocks), for size-bounded shards.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # GNU format: no pax records (a pax record can carry a float mtime); names of any length
        self._tar: tarfile.TarFile | None = tarfile.open(self.tmp_path, "w", format=tarfile.GNU_FORMAT)
        self.size = 0
        self.samples = 0

    def write(self, key: str, files: Mapping[str, bytes | str]) -> int:
        """Add one sample; returns the bytes it took. ``key`` must not contain a dot (webdataset splits the
        key from the extension at the first dot of the file name)."""
        if self._tar is None:
            raise ValueError(f"{self.path}: the shard is already closed")
        if not key or "." in key.rsplit("/", 1)[-1]:
            raise ValueError(f"sample key {key!r}: must be non-empty, without a dot in its last path part")
        if not files:
            raise ValueError(f"sample {key!r}: no files to write")
        added = 0
        for ext in sorted(files):
            if not ext or ext.startswith("__"):
                raise ValueError(f"sample {key!r}: bad extension {ext!r}")
            data = files[ext]
            data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
            added += member_size(data)
        self.size += added
        self.samples += 1
        return added

    def write_sample(self, sample: Mapping[str, bytes | str]) -> int:
        """Add a webdataset-style sample ``{"__key__": key, ext: data, ...}`` (other ``__`` keys ignored)."""
        return self.write(str(sample["__key__"]), {k: v for k, v in sample.items() if not k.startswith("__")})

    def close(self) -> Path:
        """Finish the shard and move it into place in one atomic step; returns its path."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the shard being written (its ``.tmp`` file)."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_shard(
    path: str | os.PathLike, samples: Iterable[tuple[str, Mapping[str, bytes | str]] | Mapping]
) -> Path:
    """Write a whole shard from ``[(key, {ext: data})]`` or ``[{"__key__": key, ext: data}]``; returns its
    path."""
    with ShardWriter(path) as writer:
        for sample in samples:
            if isinstance(sample, Mapping):
                writer.write_sample(sample)
            else:
                writer.write(*sample)
    return Path(path)
