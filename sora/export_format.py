"""The export folder's ``config.json``: its format, read back with every size bounded, and what it records.

Written by :mod:`sora.export`, read by :meth:`sora.pipeline.AVPipeline.from_pretrained`. Fields:
``format``, ``versions`` (sora, torch, safetensors, transformers when used), ``source`` (the checkpoint),
``ema``, ``networks`` (one config per network), ``dtypes`` (the floating dtype each network's safetensors
holds), ``sampling``, ``flow``, ``model_config_hash``, ``training`` (steps, epoch, data summary),
``text_encoder_source`` (a Hugging Face encoder: bundled or referenced, repo id, revision, licence,
fingerprint), ``eval`` (the headline summary of a ``results.json`` when one was given).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from sora.checkpoint import MAX_JSON_BYTES, check_config_sizes

FORMAT = "sora-export-v2"
FORMATS = ("sora-export-v1", FORMAT)
CAST_NETWORKS = ("dit", "text_encoder")
"""The networks a ``dtype`` applies to (the bulk of the parameters); the VAEs stay float32."""

SAMPLING_LIMITS = {
    "num_frames": 4096,
    "max_num_frames": 4096,
    "height": 8192,
    "width": 8192,
    "max_size": 8192,
    "fps": 1000,
    "sample_rate": 384_000,
}

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``"bf16"`` / ``"bfloat16"`` / ``"torch.bfloat16"`` / a floating ``torch.dtype`` / None -> a dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name in ("none", "null", "auto", ""):
        return None
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def read_manifest(
    folder: str | Path, networks: Iterable[str] = ("dit", "text_encoder", "video_vae", "audio_vae")
) -> dict:
    """``folder/config.json``, checked before anything is built: a known format, known networks, and every
    size in the network configs and sampling defaults within bounds (errors name the field)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an export folder: no config.json")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, too large for an export config")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") not in FORMATS:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: unknown export format {got!r}; this version reads {', '.join(FORMATS)}")
    nets = manifest.get("networks")
    if not isinstance(nets, dict) or "dit" not in nets:
        raise ValueError(f"{path}: 'networks' must map network names to configs and include 'dit'")
    known = tuple(networks)
    for name, config in nets.items():
        if name not in known:
            raise ValueError(f"{path}: unknown network {name!r} (one of {', '.join(known)})")
        if not isinstance(config, dict):
            raise ValueError(f"{path}: networks.{name} must be a config object")
        check_config_sizes(config, f"{path}: networks.{name}")
    for value in (manifest.get("dtypes") or {}).values():
        parse_dtype(value)  # a known name or a clear error
    sampling = manifest.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise ValueError(f"{path}: 'sampling' must be an object")
    check_config_sizes(sampling, f"{path}: sampling", SAMPLING_LIMITS)
    return manifest


def training_summary(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Steps, epoch and the data position a (Lightning) checkpoint records: samples consumed, skipped and
    filtered, summed over ranks, from the DataModule state Lightning stores under its class name."""
    out: dict[str, Any] = {
        k: ckpt[k]
        for k in ("global_step", "epoch")
        if isinstance(ckpt.get(k), int) and not isinstance(ckpt[k], bool)
    }
    if isinstance(ckpt.get("pytorch-lightning_version"), str):
        out["lightning_version"] = ckpt["pytorch-lightning_version"]
    for key, value in ckpt.items():
        if isinstance(value, Mapping) and isinstance(value.get("ranks"), list) and "world_size" in value:
            ranks = [r for r in value["ranks"] if isinstance(r, Mapping)]
            skipped: dict[str, int] = {}
            for r in ranks:
                for reason, n in (r.get("skipped") or {}).items():
                    skipped[str(reason)] = skipped.get(str(reason), 0) + int(n)
            out["data"] = {
                "datamodule": str(key),
                "world_size": value.get("world_size"),
                "samples_consumed": sum(int(r.get("samples_consumed", 0)) for r in ranks),
                "data_epoch": max((int(r.get("epoch", 0)) for r in ranks), default=0),
                "skipped": skipped,
                "filtered": sum(int(r.get("filtered", 0)) for r in ranks),
            }
    return out
