"""Learned-feature metrics from weights the user has on disk: FVD, LPIPS and a CLIP-style text-video score.

Off by default; each is switched on in the suite file (``conf/suite/world.yaml``, key ``learned``) by naming
local weights. Nothing is downloaded: a path that does not exist is a ``ValueError``, Hugging Face folders
are read with ``local_files_only=True`` and never with ``trust_remote_code``.

* ``fvd``: Fréchet Video Distance of each group to the ground truth's clips (set-level,
  :func:`eval.frechet.fvd`). ``weights``: a TorchScript file with the I3D contract of
  :class:`eval.frechet.I3DFeatures` (``(N, 3, T, S, S)`` in ``[-1, 1]`` -> ``(N, D)``; ``num_frames``,
  ``size``, ``call_kwargs`` as there), or a Hugging Face folder of a video encoder such as VideoMAE
  (``AutoModel``; input ``pixel_values (N, T, 3, S, S)`` normalised with the folder's
  ``preprocessor_config.json`` mean/std, ImageNet's without one; ``T`` and ``S`` from its config's
  ``num_frames`` / ``image_size``; features: ``pooler_output`` when the model has one, else the mean of
  ``last_hidden_state`` over tokens, as VideoMAE's classifier pools). Key ``fvd``, lower is better; few clips
  bias it upwards (see :mod:`eval.frechet`).
* ``lpips``: mean per-frame LPIPS (Zhang et al. 2018) of a generated clip against its ground truth, on the
  generated frames only (after ``given_frames``). ``weights``: a TorchScript file ``(x, y) -> distance`` on
  ``(N, 3, H, W)`` in ``[-1, 1]`` (:class:`eval.recon.LPIPS`; e.g.
  ``torch.jit.trace(lpips.LPIPS(net="vgg"), (x, y))``). Key ``lpips``, lower is better.
* ``clip_score``: CLIPSIM (Wu et al. 2021, as in Make-A-Video's tables): the mean over up to ``frames`` evenly
  spaced generated frames of the cosine similarity between the prompt's and the frame's embedding.
  ``weights``: a Hugging Face folder with a CLIP-style model (``get_text_features`` / ``get_image_features``,
  e.g. ``CLIPModel``) and its tokenizer. Key ``clip_score`` in ``[-1, 1]`` (CLIPSIM papers quote it x100),
  higher is better.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eval.clip import EvalClip
from eval.frechet import I3DFeatures, fvd

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
LEARNED = ("fvd", "lpips", "clip_score")


def _local(path: Any, what: str) -> Path:
    if path is None or str(path) == "":
        raise ValueError(f"{what} needs weights: a local path")
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ValueError(f"{what} weights {p} not found (local files only; nothing is downloaded)")
    return p


def _hf_model(folder: Path) -> nn.Module:
    try:
        from transformers import AutoModel
    except ImportError as err:  # pragma: no cover - transformers is in the dev and hf extras
        raise ImportError("Hugging Face weights need `transformers` (pip install -e '.[hf]')") from err
    return AutoModel.from_pretrained(str(folder), local_files_only=True).eval()


def _norm_stats(folder: Path, default: tuple[tuple, tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std from the folder's ``preprocessor_config.json`` (``image_mean`` / ``image_std``)."""
    mean, std = default
    conf = folder / "preprocessor_config.json"
    if conf.is_file():
        data = json.loads(conf.read_text())
        mean, std = data.get("image_mean", mean), data.get("image_std", std)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


class HFVideoEncoder(nn.Module):
    """A Hugging Face video encoder behind the I3D contract: ``(N, 3, T, S, S)`` in ``[-1, 1]`` ->
    ``(N, D)``."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.view(1, 1, 3, 1, 1))
        self.register_buffer("std", std.view(1, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, S, S) in [-1, 1] -> (N, D)."""
        pixels = ((x.transpose(1, 2) + 1) / 2 - self.mean) / self.std  # (N, T, 3, S, S)
        out = self.model(pixel_values=pixels)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(dim=1)


class VideoFeatures(I3DFeatures):
    """:class:`eval.frechet.I3DFeatures` from a TorchScript file or a Hugging Face folder (see the module
    docstring)."""

    def __init__(
        self,
        weights: str | Path,
        *,
        num_frames: int | None = None,
        size: int | None = None,
        call_kwargs: dict | None = None,
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        path = _local(weights, "fvd")
        if path.is_file():
            super().__init__(
                str(path),
                num_frames=num_frames or 16,
                size=size or 224,
                call_kwargs=call_kwargs,
                device=device,
                batch_size=batch_size,
            )
            return
        model = _hf_model(path)
        config = model.config
        self.model = (
            HFVideoEncoder(model, *_norm_stats(path, (IMAGENET_MEAN, IMAGENET_STD))).to(device).eval()
        )
        self.num_frames = int(num_frames or getattr(config, "num_frames", 16))
        self.size = int(size or getattr(config, "image_size", 224))
        self.device, self.batch_size, self.call_kwargs = device, batch_size, dict(call_kwargs or {})


def _generated_frames(clip: EvalClip) -> np.ndarray:
    """The frames the generator made (after ``given_frames``; all of them if every frame was given)."""
    return clip.video[clip.given_frames :] if clip.given_frames < clip.num_frames else clip.video


class LPIPSMetric:
    """Per-clip LPIPS against the clip's reference, generated frames only (:class:`eval.recon.LPIPS`)."""

    def __init__(self, weights: str | Path, *, device: str = "cpu", batch_size: int = 16) -> None:
        from eval.recon import LPIPS

        path = _local(weights, "lpips")
        if not path.is_file():
            raise ValueError(f"lpips weights must be a TorchScript file, got the folder {path}")
        self.lpips = LPIPS(str(path), device=device, batch_size=batch_size)

    def __call__(self, clip: EvalClip) -> dict[str, float]:
        """``{"lpips": [0, inf), lower is better}``."""
        ref = clip.require_reference("lpips")
        start = clip.given_frames if clip.given_frames < clip.num_frames else 0
        n = min(clip.num_frames, ref.num_frames)
        return {"lpips": self.lpips(clip.video[start:n], ref.video[start:n])}


class ClipScore:
    """CLIPSIM: mean cosine similarity of the prompt's and the frames' embeddings (module docstring)."""

    def __init__(self, weights: str | Path, *, frames: int = 8, device: str = "cpu") -> None:
        from transformers import AutoTokenizer

        path = _local(weights, "clip_score")
        if not path.is_dir():
            raise ValueError(
                f"clip_score weights must be a Hugging Face folder (model + tokenizer), got {path}"
            )
        if frames < 1:
            raise ValueError(f"clip_score frames must be >= 1, got {frames}")
        self.model = _hf_model(path).to(device)
        for method in ("get_text_features", "get_image_features"):
            if not hasattr(self.model, method):
                raise ValueError(f"{path}: {type(self.model).__name__} has no {method} (a CLIP-style model)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        vision = getattr(self.model.config, "vision_config", self.model.config)
        self.size = int(getattr(vision, "image_size", 224))
        text = getattr(self.model.config, "text_config", self.model.config)
        self.max_length = int(getattr(text, "max_position_embeddings", 77))
        self.mean, self.std = (t.view(1, 3, 1, 1) for t in _norm_stats(path, (CLIP_MEAN, CLIP_STD)))
        self.frames, self.device = frames, device

    @staticmethod
    def _features(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4 vs 5

    @torch.no_grad()
    def __call__(self, clip: EvalClip) -> dict[str, float]:
        """``{"clip_score": [-1, 1], higher is better}``."""
        if not clip.prompt:
            from eval.clip import MissingInput

            raise MissingInput("clip_score needs the clip's prompt")
        video = _generated_frames(clip)
        idx = np.unique(np.linspace(0, len(video) - 1, min(self.frames, len(video))).round().astype(int))
        x = torch.from_numpy(np.ascontiguousarray(video[idx])).float().permute(0, 3, 1, 2) / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        pixels = ((x - self.mean) / self.std).to(self.device)
        tokens = self.tokenizer(
            [clip.prompt], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        image = F.normalize(
            self._features(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1
        )
        text = F.normalize(self._features(self.model.get_text_features(**tokens)).float(), dim=-1)
        return {"clip_score": float((image @ text[0]).mean())}


Metric = Callable[[EvalClip], dict[str, float]]
DistributionMetric = Callable[[Sequence[EvalClip], Sequence[EvalClip]], dict[str, float]]


@dataclass
class LearnedMetrics:
    """The learned metrics a suite switched on: ``every_clip`` run on every clip, ``with_reference`` on
    generated clips (against their ground truth), ``distribution`` per group against the ground truth."""

    every_clip: dict[str, Metric] = field(default_factory=dict)
    with_reference: dict[str, Metric] = field(default_factory=dict)
    distribution: dict[str, DistributionMetric] = field(default_factory=dict)

    @property
    def registry(self) -> dict[str, Metric]:
        return {**self.every_clip, **self.with_reference}


def _enabled(cfg: Any, name: str) -> dict | None:
    entry = cfg.get(name) if cfg is not None else None
    if entry is None:
        return None
    entry = dict(entry)
    return entry if entry.get("weights") not in (None, "") else None


def build_learned(cfg: Any, device: str = "cpu") -> LearnedMetrics:
    """The metrics named in ``suite.learned`` (``{fvd|lpips|clip_score: {weights: PATH, ...}}``; a missing
    entry or ``weights: null`` is off)."""
    if cfg is not None:
        cfg = dict(cfg)
        unknown = sorted(set(cfg) - set(LEARNED))
        if unknown:
            raise ValueError(f"unknown learned metric(s) {unknown}; known: {list(LEARNED)}")
    out = LearnedMetrics()
    if entry := _enabled(cfg, "fvd"):
        call_kwargs = dict(entry.get("call_kwargs") or {})
        extractor = VideoFeatures(
            entry["weights"],
            num_frames=entry.get("num_frames"),
            size=entry.get("size"),
            call_kwargs=call_kwargs,
            device=device,
            batch_size=int(entry.get("batch_size", 8)),
        )
        out.distribution["fvd"] = lambda gen, ref: fvd(gen, ref, extractor)
    if entry := _enabled(cfg, "lpips"):
        out.with_reference["lpips"] = LPIPSMetric(entry["weights"], device=device)
    if entry := _enabled(cfg, "clip_score"):
        out.every_clip["clip_score"] = ClipScore(
            entry["weights"], frames=int(entry.get("frames", 8)), device=device
        )
    return out


__all__ = ["ClipScore", "LPIPSMetric", "LearnedMetrics", "VideoFeatures", "build_learned"]
