"""Build networks from config dicts safely, and move their weights in and out of files.

Every network in the project is described by a plain dict ``{"_target_": "sora.models.dit.AVDiT", **kwargs}``.
The same dict is stored in Lightning checkpoints (as hyper-parameters) and in exports (``config.json``), and
:func:`build_module` turns it back into a module. Unlike ``hydra.utils.instantiate`` it only imports classes on
an allowlist of the project's own networks, so loading a downloaded export never executes code named in it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

ALLOWED_TARGETS: frozenset[str] = frozenset(
    {
        "sora.models.video_vae.CausalVideoVAE",
        "sora.models.audio_vae.AudioVAE",
        "sora.models.dit.AVDiT",
        "sora.models.text.ByteTextEncoder",
        "sora.models.text.WordTextEncoder",
        "sora.models.text.HFTextEncoder",
    }
)


def to_plain_dict(config: Any) -> dict:
    """An OmegaConf node or mapping -> a plain, JSON-serialisable dict (interpolations resolved)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(config, Mapping):
        raise TypeError(f"expected a mapping config, got {type(config).__name__}")
    return json.loads(json.dumps(dict(config)))


def build_module(config: Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Construct ``config["_target_"](**rest, **overrides)`` if the target is on :data:`ALLOWED_TARGETS`."""
    config = to_plain_dict(config)
    target = config.pop("_target_", None)
    if target is None:
        raise ValueError(f"network config has no _target_: {sorted(config)}")
    if target not in ALLOWED_TARGETS:
        raise ValueError(
            f"refusing to build {target!r}: not one of the project's networks ({', '.join(sorted(ALLOWED_TARGETS))})"
        )
    module_name, _, class_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    config.update(overrides)
    return cls(**config)


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a config (recorded in sample provenance and eval results)."""
    blob = json.dumps(to_plain_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_torch_checkpoint(path: str | Path) -> dict:
    """``torch.load`` a Lightning ``.ckpt`` with ``weights_only=True`` (no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def sub_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` with the prefix stripped (e.g. ``"ema.dit"`` inside a module checkpoint)."""
    prefix = prefix.rstrip(".") + "."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def save_safetensors(
    module_or_state: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write weights as safetensors (tensors made contiguous; shared storage is cloned)."""
    from safetensors.torch import save_file

    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_network_from_checkpoint(
    path: str | Path, name: str, *, use_ema: bool = True
) -> tuple[nn.Module, dict]:
    """Rebuild the network stored as attribute ``name`` of a project LightningModule checkpoint.

    The project's modules save each network's config dict as the hyper-parameter of the same name and keep
    EMA weights (when an EMA callback ran) in ``checkpoint["ema_state_dict"]`` with the same key prefixes as
    ``state_dict``; EMA weights are preferred unless ``use_ema`` is False. Returns the module (in eval mode)
    and its config dict.
    """
    ckpt = load_torch_checkpoint(path)
    config = (ckpt.get("hyper_parameters") or {}).get(name)
    if config is None:
        raise ValueError(f"{path}: no network config {name!r} in the checkpoint's hyper-parameters")
    net = build_module(config)
    state = sub_state_dict(ckpt["state_dict"], name)
    if use_ema and ckpt.get("ema_state_dict"):
        state.update(sub_state_dict(ckpt["ema_state_dict"], name))
    net.load_state_dict(state)
    return net.eval(), to_plain_dict(config)
