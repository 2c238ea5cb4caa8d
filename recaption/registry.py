"""Captioners by name: ``build_captioner("ground_truth" | "passthrough" | "pixel" | "hf", **options)``.

The pixel and Hugging Face captioners are imported only when asked for (``transformers`` and the tracking
code stay out of every other job), and a Hugging Face captioner's model folder is checked before anything is
imported or loaded, so a wrong path is a clear message at start-up, not a failure after the first shard.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recaption.base import Captioner

CAPTIONERS = {
    "ground_truth": ("recaption.captioners", "GroundTruthCaptioner"),
    "passthrough": ("recaption.captioners", "PassthroughCaptioner"),
    "pixel": ("recaption.pixel", "PixelCaptioner"),
    "hf": ("recaption.hf", "HFCaptioner"),
}


def check_captioner(name: str, **options) -> None:
    """Raise ``ValueError`` for an unknown name or a missing model folder, without importing or loading."""
    if name not in CAPTIONERS:
        raise ValueError(f"captioner: unknown name {name!r}; choose from {sorted(CAPTIONERS)}")
    if name == "hf":
        path = options.get("model_path")
        if not path:
            raise ValueError(
                "captioner hf: give the model folder, e.g. captioner.model_path=/models/qwen2-vl"
            )
        if not Path(path).is_dir():
            raise ValueError(
                f"captioner hf: model_path {str(path)!r} is not a folder; give a local folder holding the "
                "model and processor files (save_pretrained output); nothing is downloaded"
            )


def build_captioner(name: str, **options) -> Captioner:
    """The captioner ``name`` built with ``options`` (its constructor's keyword arguments)."""
    check_captioner(name, **options)
    module_name, class_name = CAPTIONERS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"captioner {name}: cannot import {module_name} ({exc})") from exc
    try:
        return getattr(module, class_name)(**options)
    except TypeError as exc:  # an option the constructor does not take
        raise ValueError(f"captioner {name}: bad options {sorted(options)}: {exc}") from exc


def captioner_spec(cfg: DictConfig) -> dict:
    """``{"name", "options"}`` from a ``captioner`` config node (``when`` is the job's, not an option)."""
    node = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(node, dict) or not node.get("name"):
        raise ValueError(
            f"captioner: give a name (captioner=ground_truth|passthrough|pixel|hf), got {node!r}"
        )
    return {"name": node["name"], "options": {k: v for k, v in node.items() if k not in ("name", "when")}}
