"""Do objects persist over clips longer than the model's window? Extend held-out world scenes to ``seconds``.

For each scene (the world suite's held-out seeds and families, simulated for the whole length), the
first ``context_frames`` ground-truth frames with their sound are the source of an ``extend`` request for the
rest of the clip, made in rolling windows of the model's trained length (:mod:`sora.pipeline`). The
generated frames (the source is skipped: ``given_frames``) are scored with the headline ``persistence``
(:func:`eval.temporal.object_persistence`) and ``detection_rate`` (:func:`eval.objects.object_presence`),
beside the ground truth of the same length (the upper anchor), with bootstrap 95% intervals over scenes.
``detection_by_second`` says when objects get lost.

    python -m eval.long_clips checkpoint=/work/qs_out/export num_scenes=20 families=[fall] seconds=4

writes ``long_clips.json`` (and the generated clips, watermarked, in ``clips/``) to ``out_dir``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from eval.clip import EvalClip, MissingInput
from eval.objects import object_presence
from eval.scenes import clip_format, make_scenes, suite_world
from eval.stats import interval
from eval.temporal import object_persistence
from sora.config import CONF_DIR, save_resolved_config

HEADLINE = ("persistence", "detection_rate")


def score(clip: EvalClip) -> dict[str, Any]:
    """``persistence``, ``detection_rate`` and the per-second detection of the clip's generated frames; a
    metric that cannot run on it is ``None`` with its reason under ``missing``."""
    out: dict[str, Any] = {"missing": {}}
    for name, fn in (("persistence", object_persistence), ("objects", object_presence)):
        try:
            out.update(fn(clip))
        except MissingInput as err:
            out["missing"][name] = str(err)
    from eval.tracking import track_clip

    tracks = [tr for tr in track_clip(clip).values() if tr.expected]
    if tracks:
        seen = np.mean([tr.visible for tr in tracks], axis=0)  # (T,) fraction of expected objects found
        second = (np.arange(clip.num_frames) / clip.fps).astype(int)
        out["detection_by_second"] = [
            float(seen[(second == s) & clip.generated].mean())
            if ((second == s) & clip.generated).any()
            else None
            for s in range(int(second.max()) + 1)
        ]
    return out


def summary(rows: list[dict]) -> dict[str, Any]:
    """Mean, bootstrap 95% interval and n of each headline key over the rows (one per scene)."""
    out: dict[str, Any] = {}
    for key in HEADLINE:
        iv = interval([r.get(key) for r in rows])
        out.update({key: iv.mean, f"{key}_lo": iv.lo, f"{key}_hi": iv.hi, f"{key}_n": iv.n})
    by_second = [r["detection_by_second"] for r in rows if r.get("detection_by_second")]
    if by_second:
        width = max(len(b) for b in by_second)
        out["detection_by_second"] = [
            float(np.mean(col))
            if (col := [b[s] for b in by_second if s < len(b) and b[s] is not None])
            else None
            for s in range(width)
        ]
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    from sora import media
    from sora.pipeline import AVPipeline, GenerationRequest, save_clip

    out_dir = Path(cfg.out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out_dir)
    pipe = AVPipeline.from_pretrained(cfg.checkpoint, device=cfg.get("device", "cpu"), dtype=cfg.get("dtype"))
    tc = pipe.video_vae.temporal_compression
    fmt = clip_format(cfg, pipe)
    window = fmt["num_frames"]
    ctx = int(cfg.context_frames)
    if (ctx - 1) % tc or not 1 <= ctx < window:
        raise ValueError(f"context_frames must be 1 + {tc}k and < the window ({window} frames), got {ctx}")
    fmt["num_frames"] = 1 + tc * math.ceil(float(cfg.seconds) * fmt["fps"] / tc)  # the whole clip
    families = list(cfg.families)
    specs = [
        {"id": f"scene{i:03d}", "seed": int(cfg.seed) + i, "family": families[i % len(families)]}
        for i in range(int(cfg.num_scenes))
    ]
    scenes = make_scenes(suite_world(cfg), fmt, specs)
    rows, truth_rows = [], []
    for scene in scenes:
        truth = scene.truth
        source = out_dir / "clips" / f"{scene.id}_context.mp4"
        samples = round(ctx / truth.fps * truth.sample_rate)
        media.write_mp4(source, truth.video[:ctx], truth.fps, truth.audio[:, :samples], truth.sample_rate)
        req = GenerationRequest(
            prompt=truth.prompt,
            mode="extend",
            video=str(source),
            seconds=(fmt["num_frames"] - ctx) / fmt["fps"],
            context_latents=cfg.get("context_latents"),
            seed=scene.seed,
            steps=int(cfg.steps),
            video_guidance=float(cfg.video_guidance),
            audio_guidance=float(cfg.audio_guidance),
        )
        out = pipe.generate(req)
        save_clip(out, out_dir / "clips" / f"{scene.id}_extended.mp4", config_hash=pipe.config_hash)
        clip = EvalClip(
            video=out.video,
            fps=out.fps,
            audio=out.audio,
            sample_rate=out.sample_rate,
            prompt=truth.prompt,
            meta=truth.meta,
            reference=truth,
            given_frames=ctx,
        )
        row = {"scene": scene.id, "family": scene.family, "frames": int(out.video.shape[0]), **score(clip)}
        rows.append(row)
        truth_rows.append({"scene": scene.id, **score(EvalClip(**{**truth.__dict__, "given_frames": ctx}))})
        print(
            f"{scene.id} ({scene.family}): {row['frames']} frames, persistence {row.get('persistence')}, "
            f"detection_rate {row.get('detection_rate')}",
            flush=True,
        )
    results = {
        "checkpoint": str(cfg.checkpoint),
        "seconds": fmt["num_frames"] / fmt["fps"],
        "frames": fmt["num_frames"],
        "window_frames": window,
        "context_frames": ctx,
        "summary": {"generated/extend_long": summary(rows), "ground_truth": summary(truth_rows)},
        "scenes": rows,
        "ground_truth": truth_rows,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out_dir / "long_clips.json").write_text(json.dumps(results, indent=2))
    for group, s in results["summary"].items():
        print(
            f"{group}: persistence {s['persistence']:.3f} [{s['persistence_lo']:.3f}, "
            f"{s['persistence_hi']:.3f}] "
            f"detection_rate {s['detection_rate']:.3f} [{s['detection_rate_lo']:.3f}, "
            f"{s['detection_rate_hi']:.3f}] (n={s['persistence_n']})"
        )
    return results


@hydra.main(config_path=str(CONF_DIR), config_name="long_clips", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
