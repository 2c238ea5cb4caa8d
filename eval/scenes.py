"""The world suite's held-out scenes: synthetic-world clips simulated in the clip format being judged and
cropped to it (see :mod:`eval.suite` for how scenes are numbered and seeded)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from eval.clip import EvalClip


@dataclass
class Scene:
    """A held-out scene: ``truth`` is the cropped ground truth (uncompressed), prompt = caption."""

    id: str
    seed: int
    family: str
    truth: EvalClip


def crop_meta(meta: dict, num_frames: int) -> dict:
    """A copy of synthetic-world metadata for the clip's first ``num_frames`` frames: per-frame track lists
    cut, contacts at or after the new end dropped (frames clamped), ``num_frames``/``duration`` updated."""
    total = int(meta["num_frames"])
    if not 1 <= num_frames <= total:
        raise ValueError(f"cannot crop a {total}-frame clip to {num_frames} frames")
    out = copy.deepcopy(meta)
    end = num_frames / float(meta["fps"])
    out["num_frames"], out["duration"] = num_frames, end
    for track in out["tracks"]:
        for key, value in track.items():
            if isinstance(value, list) and len(value) == total:
                track[key] = value[:num_frames]
    out["contacts"] = [c for c in out["contacts"] if c["time"] < end]
    for contact in out["contacts"]:
        contact["frame"] = min(int(contact["frame"]), num_frames - 1)
    out["cropped_from_frames"] = total
    return out


def crop_clip(clip: Any, num_frames: int) -> EvalClip:
    """An :class:`EvalClip` of a ``data_pipelines.synthetic.Clip``'s first ``num_frames`` frames and the
    matching audio samples and metadata."""
    meta = crop_meta(clip.meta, num_frames)
    samples = round(num_frames / meta["fps"] * meta["sample_rate"])
    return EvalClip(
        video=np.ascontiguousarray(clip.video[:num_frames]),
        fps=float(meta["fps"]),
        audio=clip.audio[:, :samples],
        sample_rate=int(meta["sample_rate"]),
        prompt=clip.caption,
        meta=meta,
    )


def scene_specs(suite: DictConfig) -> list[dict]:
    """``[{"id", "seed", "family"}]`` of the suite's scenes (see the module docstring)."""
    from data_pipelines.synthetic import WorldConfig

    families = list(suite.get("families") or WorldConfig.from_dict(suite_world(suite)).families)
    return [
        {"id": f"scene{i:03d}", "seed": int(suite.seed) + i, "family": families[i % len(families)]}
        for i in range(int(suite.num_scenes))
    ]


def suite_world(suite: DictConfig) -> dict:
    world = suite.get("world")
    return dict(OmegaConf.to_container(world, resolve=True)) if world is not None else {}


def make_scenes(world: dict, fmt: dict, specs: list[dict]) -> list[Scene]:
    """Simulate each scene of ``specs`` in the world ``world`` (``WorldConfig`` fields) and clip format."""
    from data_pipelines.synthetic import WorldConfig, generate_clip

    world = {**world, "width": fmt["width"], "height": fmt["height"], "fps": fmt["fps"]}
    world["sample_rate"] = fmt["sample_rate"]
    world["duration"] = max(
        float(world.get("duration", WorldConfig.duration)), fmt["num_frames"] / fmt["fps"]
    )
    config = WorldConfig.from_dict(world)
    return [
        Scene(
            s["id"],
            s["seed"],
            s["family"],
            crop_clip(generate_clip(config, s["seed"], s["family"]), fmt["num_frames"]),
        )
        for s in specs
    ]


def world_scenes(suite: DictConfig, fmt: dict) -> list[Scene]:
    """The world suite's scenes in clip format ``fmt`` (see the module docstring)."""
    return make_scenes(suite_world(suite), fmt, scene_specs(suite))


def clip_format(suite: DictConfig, pipe: Any | None) -> dict:
    """Frames, fps, size and sample rate of every clip: the suite's overrides, else the model's training
    format, else the pipeline's defaults."""
    from sora.pipeline import DEFAULT_SAMPLING

    base = dict(pipe.sampling) if pipe is not None else dict(DEFAULT_SAMPLING)
    fmt = {
        k: suite.get(k) if suite.get(k) is not None else base[k]
        for k in ("num_frames", "fps", "height", "width")
    }
    return {
        "num_frames": int(fmt["num_frames"]),
        "fps": float(fmt["fps"]),
        "height": int(fmt["height"]),
        "width": int(fmt["width"]),
        "sample_rate": int(base["sample_rate"]),
    }
