"""The benchmark suite runner: clips generated through :mod:`sora.pipeline`, scored with :data:`eval.METRICS`
beside the ground truth (upper anchor) and broken copies of it (lower anchor), written as ``results.json`` and
``report.html``.

    python -m eval.suite checkpoint=PATH suite=world out_dir=outputs/eval [baseline_checkpoint=PATH]
    python -m eval.suite checkpoint=ground_truth suite=world out_dir=outputs/eval_gt  # anchors only

Config: ``conf/eval.yaml``; a suite is a file of ``conf/suite/`` (scenes, modes, metric lists). The ``world``
suite draws held-out scenes from the synthetic world: scene ``i`` is world seed ``suite.seed + i`` (the
training shards use the 63-bit hashed seeds of :func:`data_pipelines.synthetic.clip_seed`, so small seeds
are never training clips) with family ``suite.families[i % len]``. Each scene is simulated in the model's
clip format (fps and frame size from ``pipe.sampling``; ``suite.num_frames/fps/height/width`` override it,
and without a model :data:`sora.pipeline.DEFAULT_SAMPLING` gives it) and cropped to its first ``num_frames``
frames and samples, with the metadata cropped alike (tracks cut, contacts after the end dropped). The
caption still describes the whole simulated clip.

Groups of clips, each scored with the suite's metric lists:

==================  ==========================================================================================
``generated/MODE``  the model, one clip per scene and mode: ``t2av`` (the caption as prompt), ``i2v`` (the
                    first frame as a PNG), ``extend`` (the first ``context_frames`` frames as a short mp4),
                    ``v2a`` (the ground-truth video), ``a2v`` and ``remix`` (the ground-truth clip)
``baseline/MODE``   the same for ``baseline_checkpoint`` (e.g. the same architecture untrained)
``ground_truth``    the scene itself
``broken/KIND``     :data:`eval.broken.BROKEN` defects of the scene (keeping its prompt and metadata)
==================  ==========================================================================================

Every scored clip has been through one H.264/AAC round trip (``suite.round_trip``). Generated clips are
written with :func:`sora.pipeline.save_clip` (visible watermark, provenance) but scored without the
watermark: the mark is white, a palette colour the object tracker would count as an object. A metric that
lacks an input (:class:`eval.MissingInput`) or raises is recorded on the clip with its reason and counted per
group; a clip that cannot be made (a generation or a defect fails) is skipped with its reason; neither
stops the suite.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from eval import DISTRIBUTION_METRICS, METRICS, EvalClip, MissingInput
from eval.broken import BROKEN
from sora.config import CONF_DIR, save_resolved_config

log = logging.getLogger(__name__)

GROUND_TRUTH = "ground_truth"
"""``checkpoint=ground_truth``: score the anchors only."""

SUMMARY: dict[str, tuple[str, str]] = {
    "spatial_accuracy": (
        "spatial_correct",
        "mean spatial_correct (fraction of frames where both objects are found and the prompt's relation "
        "holds) over clips whose prompt states a relation",
    ),
    "spatial_pass_rate": ("spatial_pass", "fraction of those clips with spatial_correct >= 0.5"),
    "gravity_fit_rate": (
        "gravity_fit",
        "fraction of clips with enough free flight whose fitted g is within 25 % of the world's (residual "
        "<= 1 px)",
    ),
    "persistence": (
        "persistence",
        "mean fraction of frame transitions where every object keeps its colour, size and a plausible motion",
    ),
    "onset_f1": (
        "onset_f1",
        "mean F1 of the sound's onsets against the ground-truth contacts (within a frame)",
    ),
    "av_align": ("av_align", "mean AV-Align IoU of audio onsets and video motion peaks"),
    "pos_err_px": ("pos_err_px", "mean tracked centroid error against the ground-truth tracks, pixels"),
}
"""The numbers quoted per group in ``results.json["summary"]``: name -> (per-clip key averaged, meaning).
Means ignore NaN (a clip where the quantity is undefined, e.g. gravity fit without free flight)."""

FTD_DESCRIPTION = "Fréchet Trajectory Distance of the group's tracked objects to the ground truth's"


@dataclass
class Scene:
    """A held-out scene: ``truth`` is the cropped ground truth (uncompressed), prompt = caption."""

    id: str
    seed: int
    family: str
    truth: EvalClip


# ---- scenes ------------------------------------------------------------------------------------------------


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


def world_scenes(suite: DictConfig, fmt: dict) -> list[Scene]:
    """The world suite's scenes in clip format ``fmt`` (see the module docstring)."""
    from data_pipelines.synthetic import WorldConfig, generate_clip

    world = suite.get("world")
    world = dict(OmegaConf.to_container(world, resolve=True)) if world is not None else {}
    world.update(width=fmt["width"], height=fmt["height"], fps=fmt["fps"], sample_rate=fmt["sample_rate"])
    world["duration"] = max(
        float(world.get("duration", WorldConfig.duration)), fmt["num_frames"] / fmt["fps"]
    )
    config = WorldConfig.from_dict(world)
    families = list(suite.get("families") or config.families)
    scenes = []
    for i in range(int(suite.num_scenes)):
        seed, family = int(suite.seed) + i, families[i % len(families)]
        clip = generate_clip(config, seed, family)
        scenes.append(Scene(f"scene{i:03d}", seed, family, crop_clip(clip, fmt["num_frames"])))
    return scenes


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


# ---- scoring -----------------------------------------------------------------------------------------------


def score_clip(clip: EvalClip, names: list[str]) -> tuple[dict[str, float], dict[str, dict]]:
    """Run the named metrics of :data:`eval.METRICS` on ``clip``: ``(values, failures)`` with failures
    ``{metric: {"kind": "missing" | "error", "reason": str}}``; nothing raises."""
    values: dict[str, float] = {}
    failures: dict[str, dict] = {}
    for name in names:
        try:
            values.update({str(k): float(v) for k, v in METRICS[name](clip).items()})
        except MissingInput as err:
            failures[name] = {"kind": "missing", "reason": str(err)}
        except Exception as err:  # a metric bug or odd clip must not end a long run
            failures[name] = {"kind": "error", "reason": f"{type(err).__name__}: {err}"}
            log.warning("metric %s failed: %s: %s", name, type(err).__name__, err)
    return values, failures


def _round_trip(clip: EvalClip, enabled: bool) -> EvalClip:
    from eval.broken import compressed

    return compressed(clip) if enabled else clip


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def aggregate(records: list[dict], skipped: list[dict], groups: list[str]) -> dict[str, dict]:
    """Per group: clip counts, the mean (and count of finite values) of every key, failures per metric."""
    out = {}
    for group in groups:
        rows = [r for r in records if r["group"] == group]
        keys = sorted({k for r in rows for k in r["metrics"]})
        failures: Counter = Counter()
        for r in rows:
            failures.update(f"{m}:{f['kind']}" for m, f in r["failures"].items())
        out[group] = {
            "clips": len(rows),
            "clips_failed": sum(s["group"] == group for s in skipped),
            "mean": {k: _mean([r["metrics"].get(k) for r in rows if k in r["metrics"]]) for k in keys},
            "count": {k: sum(math.isfinite(r["metrics"].get(k, math.nan)) for r in rows) for k in keys},
            "failures": dict(sorted(failures.items())),
        }
    return out


def summarise(stats: dict[str, dict], distribution: dict[str, dict]) -> dict[str, dict]:
    """``results.json["summary"]``: per group the :data:`SUMMARY` numbers, ``ftd``, and the counters."""
    summary = {}
    for group, g in stats.items():
        row: dict[str, Any] = {name: g["mean"].get(key) for name, (key, _) in SUMMARY.items()}
        row["ftd"] = distribution.get(group, {}).get("ftd")
        row["clips"] = g["clips"]
        row["clips_failed"] = g["clips_failed"]
        row["metric_errors"] = sum(n for k, n in g["failures"].items() if k.endswith(":error"))
        summary[group] = row
    return summary


def _failure_table(records: list[dict]) -> dict:
    rows: dict[tuple[str, str, str], dict] = {}
    for r in records:
        for metric, f in r["failures"].items():
            row = rows.setdefault(
                (r["group"], metric, f["kind"]),
                {"group": r["group"], "metric": metric, "kind": f["kind"], "count": 0, "reason": f["reason"]},
            )
            row["count"] += 1
    table = list(rows.values())
    return {
        "total": sum(r["count"] for r in table),
        "errors": sum(r["count"] for r in table if r["kind"] == "error"),
        "missing": sum(r["count"] for r in table if r["kind"] == "missing"),
        "by_group_metric": table,
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- the run -----------------------------------------------------------------------------------------------


class _Runner:
    """Makes, writes and scores the clips of one suite run; collects records and skips."""

    def __init__(self, cfg: DictConfig, out_dir: Path, fmt: dict) -> None:
        self.cfg, self.suite, self.out_dir, self.fmt = cfg, cfg.suite, out_dir, fmt
        self.clips_dir, self.inputs_dir = out_dir / "clips", out_dir / "inputs"
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.skipped: list[dict] = []
        self.scored: dict[str, list[EvalClip]] = {}  # group -> scored clips (distribution metrics)
        self.round_trip = bool(self.suite.get("round_trip", True))
        self.keep = bool(self.suite.get("distribution_metrics"))
        wm = cfg.get("watermark") or {}
        self.watermark = {
            "watermark": bool(wm.get("enabled", True)),
            "watermark_text": str(wm.get("text", "AI")),
            "watermark_opacity": float(wm.get("opacity", 0.6)),
        }

    def metrics_for(self, mode: str | None) -> list[str]:
        extra = ((self.suite.get("mode_metrics") or {}).get(mode) or []) if mode else []
        return list(dict.fromkeys([*self.suite.metrics, *extra]))

    def _record(
        self, scene: Scene, group: str, mode: str | None, clip: EvalClip, stem: str, sheet_video
    ) -> None:
        from eval.report import contact_sheet

        sheet = contact_sheet(sheet_video, self.clips_dir / f"{stem}.png")
        values, failures = score_clip(clip, self.metrics_for(mode))
        self.records.append(
            {
                "id": f"{scene.id}/{group}",
                "group": group,
                "scene_id": scene.id,
                "seed": scene.seed,
                "family": scene.family,
                "mode": mode,
                "prompt": clip.prompt,
                "video": f"clips/{stem}.mp4",
                "sheet": sheet.relative_to(self.out_dir).as_posix(),
                "metrics": values,
                "failures": failures,
            }
        )
        if self.keep:
            self.scored.setdefault(group, []).append(dataclasses.replace(clip, reference=None))

    def skip(self, scene: Scene, group: str, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}"
        log.warning("%s/%s skipped: %s", scene.id, group, reason)
        self.skipped.append(
            {"id": f"{scene.id}/{group}", "group": group, "scene_id": scene.id, "reason": reason}
        )

    def data_clip(self, scene: Scene, group: str, clip: EvalClip) -> EvalClip:
        """Write a data clip (ground truth or broken) as mp4 and score what decodes from it."""
        from sora import media

        stem = f"{scene.id}_{group.replace('/', '_')}"
        path = self.clips_dir / f"{stem}.mp4"
        tag = {
            "generator": "data_pipelines.synthetic",
            "seed": scene.seed,
            "family": scene.family,
            "group": group,
        }
        media.write_mp4(path, clip.video, clip.fps, clip.audio, clip.sample_rate, metadata=tag)
        if self.round_trip:
            clip = EvalClip.from_media(media.read_media(path), clip.prompt, clip.meta)
        self._record(scene, group, None, clip, stem, clip.video)
        return clip

    def inputs(self, scene: Scene) -> dict[str, str]:
        """A scene's conditioning files: first frame (PNG), context prefix (mp4), the whole clip (mp4)."""
        from PIL import Image

        from sora import media

        truth, ctx = scene.truth, int(self.suite.context_frames)
        image = self.inputs_dir / f"{scene.id}_first_frame.png"
        Image.fromarray(truth.video[0]).save(image)
        context = self.inputs_dir / f"{scene.id}_context.mp4"
        samples = round(ctx / truth.fps * truth.sample_rate)
        audio = truth.audio[:, :samples] if truth.audio is not None else None
        media.write_mp4(context, truth.video[:ctx], truth.fps, audio, truth.sample_rate)
        whole = self.clips_dir / f"{scene.id}_ground_truth.mp4"
        return {"image": str(image), "context": str(context), "video": str(whole)}

    def generated(
        self, scene: Scene, group: str, pipe: Any, mode: str, inputs: dict, truth: EvalClip
    ) -> None:
        """Generate one clip through the pipeline, save it (watermarked) and score it (unwatermarked)."""
        from sora import safety
        from sora.pipeline import GenerationRequest, save_clip

        s, fmt = self.suite, self.fmt
        req = GenerationRequest(
            prompt=scene.truth.prompt,
            mode=mode,
            seed=scene.seed,
            num_frames=fmt["num_frames"],
            height=fmt["height"],
            width=fmt["width"],
            fps=fmt["fps"],
            steps=int(s.steps),
            solver=str(s.get("solver", "euler")),
            video_guidance=float(s.video_guidance),
            audio_guidance=float(s.audio_guidance),
            context_frames=int(s.context_frames),
            strength=float(s.get("strength", 0.7)),
            image=inputs["image"] if mode == "i2v" else None,
            video={"extend": inputs["context"], "v2a": inputs["video"], "remix": inputs["video"]}.get(mode),
            audio=inputs["video"] if mode == "a2v" else None,
        )
        out = pipe.generate(req)
        stem = f"{scene.id}_{group.replace('/', '_')}"
        save_clip(out, self.clips_dir / f"{stem}.mp4", config_hash=pipe.config_hash, **self.watermark)
        shown = out.video
        if self.watermark["watermark"]:
            shown = safety.apply_watermark(
                out.video, self.watermark["watermark_text"], self.watermark["watermark_opacity"]
            )
        clip = EvalClip(
            video=out.video,
            fps=out.fps,
            audio=out.audio,
            sample_rate=out.sample_rate,
            prompt=req.prompt,
            meta=scene.truth.meta,
            reference=truth,
        )
        self._record(scene, group, mode, _round_trip(clip, self.round_trip), stem, shown)

    def distribution(self, groups: list[str]) -> dict[str, dict]:
        """Set-level metrics of each group against the ground truth's clips (failures recorded, not
        raised)."""
        reference = self.scored.get(GROUND_TRUTH, [])
        out: dict[str, dict] = {}
        for group in groups:
            if group == GROUND_TRUTH or not self.scored.get(group) or not reference:
                continue
            row: dict[str, Any] = {}
            for name in self.suite.get("distribution_metrics") or []:
                try:
                    row.update(
                        {
                            k: float(v)
                            for k, v in DISTRIBUTION_METRICS[name](self.scored[group], reference).items()
                        }
                    )
                except Exception as err:
                    row[f"{name}_error"] = f"{type(err).__name__}: {err}"
                    log.warning("distribution metric %s on %s failed: %s", name, group, err)
            out[group] = row
        return out


def _check_names(suite: DictConfig) -> None:
    from sora.pipeline import MODES

    names = [*suite.metrics, *(m for ms in (suite.get("mode_metrics") or {}).values() for m in ms or [])]
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; eval.METRICS has {sorted(METRICS)}")
    unknown = sorted(set(suite.get("distribution_metrics") or []) - set(DISTRIBUTION_METRICS))
    if unknown:
        raise ValueError(f"unknown distribution metric(s) {unknown}; known: {sorted(DISTRIBUTION_METRICS)}")
    unknown = sorted(set(suite.get("broken") or []) - set(BROKEN))
    if unknown:
        raise ValueError(f"unknown broken kind(s) {unknown}; eval.broken.BROKEN has {sorted(BROKEN)}")
    bad = sorted(set([*suite.modes, *(suite.get("baseline_modes") or [])]) - (set(MODES) - {"storyboard"}))
    if bad:
        raise ValueError(f"unsupported suite mode(s) {bad}; one of {sorted(set(MODES) - {'storyboard'})}")
    if suite.get("source", "world") != "world":
        raise ValueError(f"unknown suite source {suite.source!r}; this runner knows 'world'")


def _load(path: Any, cfg: DictConfig) -> Any:
    from sora.pipeline import AVPipeline

    return AVPipeline.load(
        str(path), use_ema=bool(cfg.get("use_ema", True)), device=str(cfg.get("device", "cpu"))
    )


def run(cfg: DictConfig) -> dict:
    """Run ``cfg.suite`` on ``cfg.checkpoint`` (and ``cfg.baseline_checkpoint``); write ``results.json`` and
    ``report.html`` into ``cfg.out_dir`` and return the results dict (see the module docstring)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from eval.report import write_report

    suite = cfg.suite
    _check_names(suite)
    out_dir = Path(cfg.out_dir)
    save_resolved_config(cfg, out_dir)
    models: list[tuple[str, Any]] = []
    if str(cfg.checkpoint) != GROUND_TRUTH:
        models.append(("generated", _load(cfg.checkpoint, cfg)))
    if cfg.get("baseline_checkpoint"):
        models.append(("baseline", _load(cfg.baseline_checkpoint, cfg)))
    fmt = clip_format(suite, models[0][1] if models else None)
    scenes = world_scenes(suite, fmt)
    baseline_modes = suite.get("baseline_modes")
    modes = {
        label: list(suite.modes if label == "generated" or baseline_modes is None else baseline_modes)
        for label, _ in models
    }
    broken = list(suite.get("broken") or [])
    groups = [f"{label}/{mode}" for label, _ in models for mode in modes[label]] + [GROUND_TRUTH]
    groups += [f"broken/{kind}" for kind in broken]

    runner = _Runner(cfg, out_dir, fmt)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("eval", total=len(scenes) * len(groups))
        for scene in scenes:
            bar.update(task, description=f"{scene.id} {GROUND_TRUTH}")
            inputs = runner.inputs(scene)
            truth = runner.data_clip(scene, GROUND_TRUTH, scene.truth)
            bar.advance(task)
            for label, pipe in models:
                for mode in modes[label]:
                    group = f"{label}/{mode}"
                    bar.update(task, description=f"{scene.id} {group}")
                    try:
                        runner.generated(scene, group, pipe, mode, inputs, truth)
                    except Exception as err:  # one bad request must not end the suite
                        runner.skip(scene, group, err)
                    bar.advance(task)
            for kind in broken:
                group = f"broken/{kind}"
                bar.update(task, description=f"{scene.id} {group}")
                try:
                    runner.data_clip(scene, group, BROKEN[kind](scene.truth))
                except Exception as err:  # e.g. a two-object defect on a one-object scene
                    runner.skip(scene, group, err)
                bar.advance(task)

    stats = aggregate(runner.records, runner.skipped, groups)
    distribution = runner.distribution(groups)
    descriptions = {name: text for name, (_, text) in SUMMARY.items()}
    if suite.get("distribution_metrics"):
        descriptions["ftd"] = FTD_DESCRIPTION
    main = dict(models)
    results = {
        "suite": str(suite.get("name", "world")),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "checkpoint": str(cfg.checkpoint),
        "model_config_hash": main["generated"].config_hash if "generated" in main else None,
        "baseline_checkpoint": str(cfg.baseline_checkpoint) if cfg.get("baseline_checkpoint") else None,
        "baseline_config_hash": main["baseline"].config_hash if "baseline" in main else None,
        "format": fmt,
        "num_scenes": len(scenes),
        "scenes": [
            {"id": s.id, "seed": s.seed, "family": s.family, "prompt": s.truth.prompt} for s in scenes
        ],
        "summary_numbers": [*SUMMARY, *(["ftd"] if suite.get("distribution_metrics") else [])],
        "summary_descriptions": descriptions,
        "summary": summarise(stats, distribution),
        "groups": stats,
        "distribution": distribution,
        "failures": {
            **_failure_table(runner.records),
            "distribution": [
                {"group": g, "metric": k.removesuffix("_error"), "reason": v}
                for g, row in distribution.items()
                for k, v in row.items()
                if k.endswith("_error")
            ],
        },
        "skipped": runner.skipped,
        "clips": runner.records,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "report": "report.html",
    }
    results = _json_safe(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    report = write_report(results, out_dir)
    _print_summary(results, report)
    return results


def _print_summary(results: dict, report: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from eval.report import fmt

    numbers = results["summary_numbers"]
    table = Table(title=f"suite {results['suite']}: {results['num_scenes']} scene(s)")
    table.add_column("group", no_wrap=True)
    for n in numbers:
        table.add_column(n, justify="right")
    for group, row in results["summary"].items():
        table.add_row(group, *(fmt(row.get(n)) for n in numbers))
    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 40 + 14 * len(numbers)))
    console.print(table)
    f = results["failures"]
    console.print(
        f"metric failures: {f['errors']} error(s), {f['missing']} missing input(s); "
        f"{len(results['skipped'])} clip(s) skipped"
    )
    console.print(f"[bold green]report: {report.resolve()}")


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
