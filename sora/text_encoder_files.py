"""A frozen Hugging Face text encoder in an export: bundled (copied in) or referenced (named), and checked.

An export is self-contained by default: the encoder's weights (safetensors), config and tokenizer files are
written to ``<export>/text_encoder/`` together with its licence files, and ``config.json`` points there with a
relative path. With ``text_encoder=reference`` only its name is recorded (hub repo id and revision, or the
folder it came from) and the loader says exactly what to provide. Either way ``config.json`` keeps a
fingerprint of the weights (sha256 over every tensor's name, dtype, shape and bytes), so a referenced encoder
that is not the one the DiT was trained with is an error, not a silently different model.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sora.checkpoint import HF_SIZE_LIMITS, MAX_JSON_BYTES, build_module, check_config_sizes

BUNDLE_DIR = "text_encoder"
LICENCE_FILES = ("LICENSE", "LICENCE", "COPYING", "NOTICE")
_HUB_CACHE = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{7,64})")


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over the module's tensors (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _licence(src: Path) -> str:
    """The licence a model folder states: its model card's ``license:`` field, else its licence file."""
    card = src / "README.md"
    if card.is_file():
        m = re.search(r"^---\s*$(.*?)^---\s*$", card.read_text(errors="replace"), re.S | re.M)
        if m and (lic := re.search(r"^licen[cs]e:\s*(.+)$", m.group(1), re.M)):
            return lic.group(1).strip().strip("'\"")
    for p in sorted(src.iterdir()) if src.is_dir() else []:
        if p.is_file() and p.name.upper().startswith(LICENCE_FILES):
            first = next((ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()), "")
            return f"{first} (see {p.name})" if first else f"see {p.name}"
    return "not stated in the encoder's folder: check its terms before sharing this export"


def describe_source(
    path: str, model: nn.Module, repo_id: str | None = None, revision: str | None = None
) -> dict[str, Any]:
    """Where an encoder came from: hub repo id and revision (given, or read from a hub cache path
    ``models--org--name/snapshots/<rev>``, or the model config's ``_name_or_path``), licence, fingerprint."""
    resolved = str(Path(path).resolve()) if Path(path).exists() else str(path)
    if m := _HUB_CACHE.search(resolved):
        repo_id = repo_id or f"{m['org']}/{m['name']}"
        revision = revision or m["rev"]
    name_or_path = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    if repo_id is None and name_or_path and not Path(name_or_path).is_absolute() and "/" in name_or_path:
        repo_id = name_or_path
    return {
        "repo_id": repo_id,
        "revision": revision,
        "source_path": str(path),
        "class": type(model).__name__,
        "license": _licence(Path(path)),
        "fingerprint": weights_fingerprint(model),
    }


def bundle(encoder: Any, out: Path, source: dict[str, Any]) -> str:
    """Write a frozen HF encoder's weights (safetensors), config, tokenizer and licence files to
    ``out/text_encoder``; returns the relative path for ``config.json``."""
    model = encoder.model
    if not hasattr(model, "save_pretrained"):
        raise ValueError(
            f"cannot bundle the text encoder at {encoder.path!r} ({type(model).__name__} has no "
            f"save_pretrained): export with text_encoder=reference"
        )
    dest = out / BUNDLE_DIR
    if dest.exists():
        shutil.rmtree(dest)
    model.save_pretrained(dest)
    encoder.tokenizer.save_pretrained(dest)
    src = Path(source["source_path"])
    if src.is_dir():
        for p in src.iterdir():
            if p.is_file() and (p.name.upper().startswith(LICENCE_FILES) or p.name == "README.md"):
                shutil.copyfile(p, dest / p.name)
    pickles = [p.name for p in dest.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    if pickles:  # pragma: no cover - save_pretrained writes safetensors
        raise AssertionError(f"pickled weights written into the export: {pickles}")
    return BUNDLE_DIR


def check_hf_folder(folder: Path) -> None:
    """Bound a Hugging Face folder's sizes before transformers allocates anything; refuse pickles there."""
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: no config.json")
    if config.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{config}: {config.stat().st_size} bytes, not a model config")
    check_config_sizes(json.loads(config.read_text()), str(config), HF_SIZE_LIMITS, max_list=4096)
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise ValueError(
            f"{folder}: no safetensors weights ({', '.join(pickles) or 'no weights at all'}); pickled "
            f"weights are not loaded from an export"
        )


def load_text_encoder(
    folder: Path,
    config: Mapping[str, Any],
    source: Mapping[str, Any] | None,
    text_encoder_path: str | Path | None = None,
    verify: bool = True,
) -> nn.Module:
    """The HF text encoder of an export: its bundled copy, or ``text_encoder_path``, or the path it was
    recorded with (a reference); fingerprint checked against ``config.json``'s when ``verify``."""
    source = dict(source or {})
    mode = source.get("mode", "reference")
    if text_encoder_path is not None:
        where = Path(text_encoder_path)
    elif mode == "bundled":
        where = folder / str(config["path"])
    else:
        where = Path(str(config["path"]))
        if not (where / "config.json").is_file() and source.get("repo_id"):
            where = _hub_cache(source["repo_id"], source.get("revision")) or where
    if not (where / "config.json").is_file():
        raise FileNotFoundError(_what_to_provide(folder, source, where, given=text_encoder_path is not None))
    if mode == "bundled" and text_encoder_path is None:
        check_hf_folder(where)
    else:
        config_file = where / "config.json"
        check_config_sizes(
            json.loads(config_file.read_text()), str(config_file), HF_SIZE_LIMITS, max_list=4096
        )
    encoder = build_module(config, path=str(where))
    expected = source.get("fingerprint")
    if verify and expected:
        got = weights_fingerprint(encoder.model)
        if got != expected:
            raise ValueError(
                f"the text encoder at {where} is not the one this export was trained with: weights "
                f"fingerprint {got[:16]}, {folder / 'config.json'} records {expected[:16]} "
                f"({_name(source)}); pass the right folder, or verify_text_encoder=False to use it anyway"
            )
    return encoder


def _hub_cache(repo_id: str, revision: str | None) -> Path | None:
    """The folder of ``repo_id`` at ``revision`` in the local Hugging Face cache, if there (no network)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or huggingface_hub missing: the caller says what to provide
        return None


def _name(source: Mapping[str, Any]) -> str:
    if source.get("repo_id"):
        return f"{source['repo_id']} at revision {source.get('revision') or 'unknown'}"
    return f"the folder {source.get('source_path')!r} on the training machine"


def _what_to_provide(folder: Path, source: Mapping[str, Any], where: Path, given: bool) -> str:
    if source.get("mode") == "bundled" and not given:
        return f"{folder} is incomplete: the bundled text encoder folder {where} is missing (copy it again)"
    download = (
        f" e.g. `huggingface-cli download {source['repo_id']} --revision {source.get('revision') or 'main'} "
        f"--local-dir DIR`,"
        if source.get("repo_id")
        else ""
    )
    return (
        f"{folder} references its text encoder instead of bundling it: {_name(source)} "
        f"({source.get('class', 'a Hugging Face model')}, weights fingerprint "
        f"{str(source.get('fingerprint', 'unknown'))[:16]}), not found at {where}. Get that model's folder "
        f"(config, safetensors weights, tokenizer files),{download} and load with "
        f"AVPipeline.from_pretrained({str(folder)!r}, text_encoder_path=DIR)"
    )
