"""Consolidate a sharded checkpoint (a ``torch.distributed.checkpoint`` folder) into one state dict, safely.

Lightning's FSDP / ModelParallel strategies with ``state_dict_type="sharded"`` write a folder: the tensors
in ``*.distcp`` files described by a pickled ``.metadata``, under the key ``model`` (plus ``optimizer_<i>``),
and the rest of the checkpoint (hyper-parameters, EMA weights, counters) as ``meta.pt``. Loaded here in one
process (no process group) into the same dict a ``.ckpt`` holds:

- ``.metadata`` is unpickled by an allowlist unpickler: the checkpoint metadata classes, ``torch.Size`` and
  dtypes only (``torch.distributed.checkpoint`` itself calls a plain ``pickle.load``, which runs any code);
- the tensors it declares are bounded by the bytes of the shard files on disk before anything is allocated,
  and shard file names must lie inside the folder;
- only the ``model`` tensors are read (``torch.load(weights_only=True)`` per tensor, as DCP does); optimizer
  states and pickled non-tensor entries are never read; ``meta.pt`` is read with ``weights_only=True``.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import torch

METADATA_FILE = ".metadata"
LIGHTNING_META_FILE = "meta.pt"
_DCP = "torch.distributed.checkpoint"
_ALLOWED_GLOBALS = {
    (f"{_DCP}.metadata", "Metadata"),
    (f"{_DCP}.metadata", "TensorStorageMetadata"),
    (f"{_DCP}.metadata", "BytesStorageMetadata"),
    (f"{_DCP}.metadata", "ChunkStorageMetadata"),
    (f"{_DCP}.metadata", "TensorProperties"),
    (f"{_DCP}.metadata", "MetadataIndex"),
    (f"{_DCP}.metadata", "StorageMeta"),
    (f"{_DCP}.metadata", "_MEM_FORMAT_ENCODING"),
    (f"{_DCP}.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name} in a sharded checkpoint's {METADATA_FILE}: only checkpoint "
                f"metadata classes may appear there"
            )
        return super().find_class(module, name)


def is_sharded_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / METADATA_FILE).is_file()


def read_metadata(folder: str | Path) -> Any:
    """The folder's ``.metadata`` (a ``torch.distributed.checkpoint.metadata.Metadata``), unpickled safely."""
    path = Path(folder) / METADATA_FILE
    try:
        with open(path, "rb") as f:
            return _MetadataUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as err:
        raise ValueError(f"{path}: not a readable checkpoint metadata file: {err}") from err


def _reader_for(folder: Path, metadata: Any) -> Any:
    from torch.distributed.checkpoint import FileSystemReader

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            return metadata

    return SafeReader(str(folder))


def load_sharded_checkpoint(folder: str | Path, key: str = "model") -> dict:
    """A sharded checkpoint folder -> ``{**meta.pt, "state_dict": {name: tensor}}`` (the ``key`` tensors)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from sora.checkpoint import load_torch_checkpoint

    folder = Path(folder)
    metadata = read_metadata(folder)
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    for info in getattr(metadata, "storage_data", {}).values():
        rel = str(info.relative_path)
        if rel not in files or rel in (METADATA_FILE, LIGHTNING_META_FILE):
            raise ValueError(f"{folder}: shard file {rel!r} is not a file of the checkpoint folder")
    prefix = key + "."
    wanted = {
        k[len(prefix) :]: md
        for k, md in metadata.state_dict_metadata.items()
        if k.startswith(prefix) and isinstance(md, TensorStorageMetadata)
    }
    if not wanted:
        raise ValueError(f"{folder}: no {key!r} tensors in the sharded checkpoint")
    declared = sum(math.prod(md.size) * md.properties.dtype.itemsize for md in wanted.values())
    on_disk = sum(n for name, n in files.items() if name not in (METADATA_FILE, LIGHTNING_META_FILE))
    if declared > on_disk:
        raise ValueError(
            f"{folder}: the metadata declares {declared} bytes of tensors but the shard files hold {on_disk} "
            f"(truncated or forged checkpoint)"
        )
    state = {k: torch.empty(tuple(md.size), dtype=md.properties.dtype) for k, md in wanted.items()}
    dcp.load({key: state}, storage_reader=_reader_for(folder, metadata), no_dist=True)
    meta_path = folder / LIGHTNING_META_FILE
    ckpt = load_torch_checkpoint(meta_path) if meta_path.is_file() else {}
    return {**ckpt, "state_dict": state}


def save_sharded_checkpoint(state: dict, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``state`` the way Lightning's sharded save does (``{"model": state}`` + ``meta.pt``), in one
    process: for tests and for converting a full checkpoint to the sharded layout."""
    import torch.distributed.checkpoint as dcp

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dcp.save({"model": state}, checkpoint_id=str(folder), no_dist=True)
    if extra is not None:
        buf = io.BytesIO()
        torch.save(extra, buf)
        (folder / LIGHTNING_META_FILE).write_bytes(buf.getvalue())
    return folder
