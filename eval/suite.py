"""The benchmark suite runner: clips generated through :mod:`sora.pipeline` (or by any model, from a
folder), scored with :data:`eval.METRICS` beside the ground truth (upper anchor) and broken copies of it
(lower anchor), written as ``results.json`` and ``report.html``.

    python -m eval.suite checkpoint=PATH suite=world out_dir=outputs/eval [baseline_checkpoint=PATH]
    python -m eval.suite checkpoint=ground_truth suite=world out_dir=outputs/eval_gt  # anchors only
    python -m eval.suite suite=world prompts_out=DIR             # what another model should generate
    python -m eval.suite suite=world clips=DIR out_dir=OUT       # score DIR/<id>.mp4 (see eval/prompts.py)

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
``generated/MODE``  the model, ``suite.seeds_per_scene`` clips per scene and mode (generator seeds from
                    :func:`eval.prompts.generation_seed`): ``t2av`` (the caption as prompt), ``i2v`` (the
                    first frame as a PNG), ``extend`` (the first ``context_frames`` frames as a short mp4),
                    ``v2a`` (the ground-truth video), ``a2v`` and ``remix`` (the ground-truth clip); with
                    ``clips=DIR``, the folder's clips
``baseline/MODE``   the same for ``baseline_checkpoint`` (e.g. the same architecture untrained)
``ground_truth``    the scene itself
``vae_round_trip``  the scene through the model's VAEs and back (``suite.vae_round_trip``): the most the
                    DiT's latents can decode to, so a low score here says the VAEs, not the DiT, fail it
``broken/KIND``     :data:`eval.broken.BROKEN` defects of the scene (keeping its prompt and metadata)
==================  ==========================================================================================

For i2v and extend the clip's ``given_frames`` (1, ``context_frames``) tell the metrics which leading frames
were conditioning. The summary (:mod:`eval.summary`) gives every number with ``n`` and a 95 % scene-bootstrap
interval (:mod:`eval.stats`), per family, and paired win rates against the ground truth and the baseline.

Every scored clip has been through one H.264/AAC round trip (``suite.round_trip``). Generated clips are
written with :func:`sora.pipeline.save_clip` (visible watermark, provenance) but scored without the
watermark: the mark is white, a palette colour the object tracker would count as an object. A metric that
lacks an input (:class:`eval.MissingInput`) or raises is recorded on the clip with its reason and counted per
group. A clip that cannot be made is skipped with its reason; a broken defect that does not apply (a
two-object defect on a one-object scene) is not fatal, but a generated clip that crashes or a folder clip
that is missing or malformed makes the run raise :class:`IncompleteRunError` (the CLI exits 1) after
results.json and the report are written, unless ``allow_missing=true``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from eval import DISTRIBUTION_METRICS, METRICS, EvalClip, MissingInput
from eval.broken import BROKEN
from eval.prompts import generation_seed, given_frames, write_prompts
from eval.scenes import Scene, clip_format, crop_clip, crop_meta, make_scenes, world_scenes
from eval.summary import HEADLINE, SUMMARY, aggregate, by_family, paired_comparisons, summarise
from sora.config import CONF_DIR, save_resolved_config

log = logging.getLogger(__name__)

__all__ = [
    "GROUND_TRUTH",
    "IncompleteRunError",
    "crop_clip",
    "crop_meta",
    "run",
    "score_clip",
    "world_scenes",
]

GROUND_TRUTH = "ground_truth"
"""``checkpoint=ground_truth``: score the anchors only."""
VAE_ROUND_TRIP = "vae_round_trip"
"""The group of each scene through the model's VAEs and back (``suite.vae_round_trip``)."""

DISTRIBUTION_DESCRIPTIONS = {
    "ftd": "Fréchet Trajectory Distance of the group's tracked objects to the ground truth's",
    "fvd": "Fréchet Video Distance to the ground truth's clips (user-given video encoder)",
    "audio_fd": "Fréchet distance of the group's log-mel frame statistics to the ground truth's",
}


class IncompleteRunError(RuntimeError):
    """Clips the run was asked to score were not (generation crashed, file missing or malformed)."""


# ---- scoring -----------------------------------------------------------------------------------------------


def score_clip(
    clip: EvalClip, names: list[str], extra: dict[str, Any] | None = None
) -> tuple[dict[str, float], dict[str, dict]]:
    """Run the named metrics of :data:`eval.METRICS` (or of ``extra``, e.g. learned ones) on ``clip``:
    ``(values, failures)`` with failures ``{metric: {"kind": "missing" | "error", "reason": str}}``; nothing
    raises."""
    registry = {**METRICS, **(extra or {})}
    values: dict[str, float] = {}
    failures: dict[str, dict] = {}
    for name in names:
        try:
            values.update({str(k): float(v) for k, v in registry[name](clip).items()})
        except MissingInput as err:
            failures[name] = {"kind": "missing", "reason": str(err)}
        except Exception as err:  # a metric bug or odd clip must not end a long run
            failures[name] = {"kind": "error", "reason": f"{type(err).__name__}: {err}"}
            log.warning("metric %s failed: %s: %s", name, type(err).__name__, err)
    return values, failures


def _round_trip(clip: EvalClip, enabled: bool) -> EvalClip:
    from eval.broken import compressed

    return compressed(clip) if enabled else clip  # keeps given_frames and the reference


def vae_round_trip(pipe: Any, truth: EvalClip) -> EvalClip:
    """``truth`` through ``pipe``'s VAEs and back (:meth:`sora.pipeline.AVPipeline.round_trip`), with its
    prompt and metadata: scored like a data clip."""
    video, audio = pipe.round_trip(truth.video, truth.audio, truth.sample_rate)
    rate = pipe.sampling["sample_rate"] if audio is not None else truth.sample_rate
    return dataclasses.replace(truth, video=video, audio=audio, sample_rate=rate)


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

    def __init__(self, cfg: DictConfig, out_dir: Path, fmt: dict, learned: Any) -> None:
        self.cfg, self.suite, self.out_dir, self.fmt, self.learned = cfg, cfg.suite, out_dir, fmt, learned
        self.clips_dir, self.inputs_dir = out_dir / "clips", out_dir / "inputs"
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.skipped: list[dict] = []
        self.scored: dict[str, list[EvalClip]] = {}  # group -> scored clips (distribution metrics)
        self.round_trip = bool(self.suite.get("round_trip", True))
        self.keep = bool(self.distribution_metrics())
        wm = cfg.get("watermark") or {}
        self.watermark = {
            "watermark": bool(wm.get("enabled", True)),
            "watermark_text": str(wm.get("text", "AI")),
            "watermark_opacity": float(wm.get("opacity", 0.6)),
        }

    def distribution_metrics(self) -> dict[str, Any]:
        names = self.suite.get("distribution_metrics") or []
        return {**{n: DISTRIBUTION_METRICS[n] for n in names}, **self.learned.distribution}

    def metrics_for(self, mode: str | None) -> list[str]:
        """The suite's metrics, a generated mode's extra ones, and the learned ones that apply."""
        extra = ((self.suite.get("mode_metrics") or {}).get(mode) or []) if mode else []
        learned = [*self.learned.every_clip, *(self.learned.with_reference if mode else [])]
        return list(dict.fromkeys([*self.suite.metrics, *extra, *learned]))

    def _record(
        self,
        scene: Scene,
        group: str,
        mode: str | None,
        clip: EvalClip,
        stem: str,
        sheet_video: np.ndarray,
        sample: int = 0,
        notes: dict | None = None,
        started: float | None = None,
    ) -> None:
        from eval.report import contact_sheet

        sheet = contact_sheet(sheet_video, self.clips_dir / f"{stem}.png")
        values, failures = score_clip(clip, self.metrics_for(mode), self.learned.registry)
        self.records.append(
            {
                "id": f"{scene.id}/{group}" + (f"/s{sample}" if sample else ""),
                "group": group,
                "scene_id": scene.id,
                "seed": scene.seed,
                "family": scene.family,
                "mode": mode,
                "sample": sample,
                "given_frames": clip.given_frames,
                "prompt": clip.prompt,
                "video": f"clips/{stem}.mp4",
                "sheet": sheet.relative_to(self.out_dir).as_posix(),
                "metrics": values,
                "failures": failures,
                **({"notes": notes} if notes else {}),
                # wall seconds to make (generate or write), round-trip and score the clip
                **({"seconds": time.perf_counter() - started} if started is not None else {}),
            }
        )
        if self.keep:
            self.scored.setdefault(group, []).append(dataclasses.replace(clip, reference=None))

    def skip(self, scene: Scene, group: str, err: BaseException, sample: int = 0) -> None:
        reason = f"{type(err).__name__}: {err}"
        log.warning("%s/%s skipped: %s", scene.id, group, reason)
        self.skipped.append(
            {
                "id": f"{scene.id}/{group}" + (f"/s{sample}" if sample else ""),
                "group": group,
                "scene_id": scene.id,
                "reason": reason,
            }
        )

    def data_clip(self, scene: Scene, group: str, clip: EvalClip) -> EvalClip:
        """Write a data clip (ground truth or broken) as mp4 and score what decodes from it."""
        from sora import media

        started = time.perf_counter()
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
        self._record(scene, group, None, clip, stem, clip.video, started=started)
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
        self, scene: Scene, group: str, pipe: Any, mode: str, inputs: dict, truth: EvalClip, sample: int = 0
    ) -> None:
        """Generate one clip through the pipeline, save it (watermarked) and score it (unwatermarked)."""
        from sora import safety
        from sora.pipeline import GenerationRequest, save_clip

        started = time.perf_counter()
        s, fmt = self.suite, self.fmt
        req = GenerationRequest(
            prompt=scene.truth.prompt,
            mode=mode,
            seed=generation_seed(scene.seed, sample),
            num_frames=fmt["num_frames"],
            height=fmt["height"],
            width=fmt["width"],
            fps=fmt["fps"],
            steps=int(s.steps),
            solver=str(s.get("solver", "euler")),
            video_guidance=float(s.video_guidance),
            audio_guidance=float(s.audio_guidance),
            # extend: the whole context clip is the clean prefix; one window follows it (num_frames in all)
            context_latents=(
                1 + (int(s.context_frames) - 1) // pipe.video_vae.temporal_compression
                if mode == "extend"
                else None
            ),
            strength=float(s.get("strength", 0.7)),
            image=inputs["image"] if mode == "i2v" else None,
            video={"extend": inputs["context"], "v2a": inputs["video"], "remix": inputs["video"]}.get(mode),
            audio=inputs["video"] if mode == "a2v" else None,
        )
        out = pipe.generate(req)
        stem = f"{scene.id}_{group.replace('/', '_')}" + (f"_s{sample}" if sample else "")
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
            given_frames=min(given_frames(mode, int(s.context_frames)), out.video.shape[0] - 1),
        )
        clip = _round_trip(clip, self.round_trip)
        self._record(scene, group, mode, clip, stem, shown, sample, started=started)

    def external(self, scene: Scene, folder: Path, row: dict, truth: EvalClip) -> None:
        """Score ``folder/<id>.mp4`` of a ``prompts.jsonl`` row as ``generated/<mode>`` (no round trip: the
        file is what the other model made)."""
        from eval.prompts import load_clip

        clip, notes = load_clip(folder, row, self.fmt, truth)
        stem = f"{scene.id}_generated_{row['mode']}" + (
            f"_s{row.get('sample', 0)}" if row.get("sample") else ""
        )
        (self.clips_dir / f"{stem}.mp4").write_bytes((folder / f"{row['id']}.mp4").read_bytes())
        group = f"generated/{row['mode']}"
        self._record(scene, group, row["mode"], clip, stem, clip.video, int(row.get("sample", 0)), notes)

    def distribution(self, groups: list[str]) -> dict[str, dict]:
        """Set-level metrics of each group against the ground truth's clips (failures recorded, not
        raised)."""
        reference = self.scored.get(GROUND_TRUTH, [])
        out: dict[str, dict] = {}
        for group in groups:
            if group == GROUND_TRUTH or not self.scored.get(group) or not reference:
                continue
            row: dict[str, Any] = {}
            for name, metric in self.distribution_metrics().items():
                try:
                    row.update({k: float(v) for k, v in metric(self.scored[group], reference).items()})
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
    if int(suite.get("seeds_per_scene", 1)) < 1:
        raise ValueError(f"suite.seeds_per_scene must be >= 1, got {suite.seeds_per_scene}")
    first = suite.get("baseline_scenes")
    if first is not None and (isinstance(first, bool) or not isinstance(first, int) or first < 1):
        raise ValueError(f"suite.baseline_scenes must be null or an integer >= 1, got {first!r}")


def _load(path: Any, cfg: DictConfig) -> Any:
    from sora.pipeline import AVPipeline

    return AVPipeline.load(
        str(path), use_ema=bool(cfg.get("use_ema", True)), device=str(cfg.get("device", "cpu"))
    )


def _entry(cfg: DictConfig) -> str:
    """Which of the four runs ``cfg`` asks for: ``prompts``, ``clips``, ``ground_truth`` or ``model``."""
    asked = [k for k in ("prompts_out", "clips", "checkpoint") if cfg.get(k) not in (None, "")]
    if not asked:
        raise ValueError(
            "give checkpoint=PATH (a model), checkpoint=ground_truth (anchors only), prompts_out=DIR (write "
            "what to generate) or clips=DIR (score a folder of clips)"
        )
    if len(asked) > 1 and not (asked == ["clips", "checkpoint"] and str(cfg.checkpoint) == GROUND_TRUTH):
        raise ValueError(f"give one of prompts_out=, clips=, checkpoint=; got {asked}")
    if asked[0] == "checkpoint":
        return GROUND_TRUTH if str(cfg.checkpoint) == GROUND_TRUTH else "model"
    return "prompts" if asked[0] == "prompts_out" else "clips"


def run(cfg: DictConfig) -> dict:
    """Run ``cfg.suite`` (see the module docstring); write ``results.json`` and ``report.html`` into
    ``cfg.out_dir`` and return the results dict. ``prompts_out=DIR`` only writes the prompts and returns
    ``{"prompts": path}``. Raises :class:`IncompleteRunError` (after writing) when generated or folder clips
    are missing, unless ``allow_missing=true``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from eval.learned import build_learned
    from eval.report import write_report

    suite = cfg.suite
    _check_names(suite)
    entry = _entry(cfg)
    if entry == "prompts":
        return {"prompts": str(write_prompts(cfg))}
    learned = build_learned(suite.get("learned"), device=str(cfg.get("device", "cpu")))  # fails early
    out_dir = Path(cfg.out_dir)
    save_resolved_config(cfg, out_dir)
    models: list[tuple[str, Any]] = []
    rows: list[dict] = []
    folder = Path(cfg.clips) if entry == "clips" else None
    if folder is not None:
        from eval.prompts import read_prompts

        spec, rows = read_prompts(folder)
        fmt = dict(spec["format"])
        scenes = make_scenes(dict(spec["world"]), fmt, list(spec["scenes"]))
        known = {s.id for s in scenes}
        stray = sorted({r["scene_id"] for r in rows} - known)
        if stray:
            raise ValueError(f"{folder}: prompts.jsonl names scenes {stray} that suite.json does not define")
    else:
        if entry == "model":
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
    samples = int(suite.get("seeds_per_scene", 1))
    # The baseline (an untrained lower anchor) on the first scenes only: a clip costs what the model's does.
    first = suite.get("baseline_scenes")
    baseline_scenes = len(scenes) if first is None else min(int(first), len(scenes))

    pipes = dict(models)

    def labels_for(index: int) -> list[str]:
        return [label for label in pipes if label != "baseline" or index < baseline_scenes]

    broken = list(suite.get("broken") or [])
    groups = [f"{label}/{mode}" for label, _ in models for mode in modes[label]]
    groups += list(dict.fromkeys(f"generated/{r['mode']}" for r in rows))
    groups += [GROUND_TRUTH, *(f"broken/{kind}" for kind in broken)]
    vae_pipe = pipes.get("generated") if suite.get("vae_round_trip", False) else None
    if vae_pipe is not None:
        groups.append(VAE_ROUND_TRIP)

    runner = _Runner(cfg, out_dir, fmt, learned)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    data = 1 + len(broken) + (vae_pipe is not None)
    made = sum(len(modes[label]) * samples for i in range(len(scenes)) for label in labels_for(i))
    with Progress(*columns) as bar:
        task = bar.add_task("eval", total=len(scenes) * data + made + len(rows))
        for index, scene in enumerate(scenes):
            bar.update(task, description=f"{scene.id} {GROUND_TRUTH}")
            inputs = runner.inputs(scene) if models else {}
            truth = runner.data_clip(scene, GROUND_TRUTH, scene.truth)
            bar.advance(task)
            for label in labels_for(index):
                pipe = pipes[label]
                for mode in modes[label]:
                    group = f"{label}/{mode}"
                    for sample in range(samples):
                        bar.update(task, description=f"{scene.id} {group}")
                        try:
                            runner.generated(scene, group, pipe, mode, inputs, truth, sample)
                        except Exception as err:  # one bad request must not end the suite
                            runner.skip(scene, group, err, sample)
                        bar.advance(task)
            for row in (r for r in rows if r["scene_id"] == scene.id):
                bar.update(task, description=f"{scene.id} {row['id']}")
                try:
                    runner.external(scene, folder, row, truth)
                except Exception as err:  # a missing or malformed clip is counted, not fatal here
                    runner.skip(scene, f"generated/{row['mode']}", err, int(row.get("sample", 0)))
                bar.advance(task)
            if vae_pipe is not None:
                bar.update(task, description=f"{scene.id} {VAE_ROUND_TRIP}")
                try:
                    runner.data_clip(scene, VAE_ROUND_TRIP, vae_round_trip(vae_pipe, scene.truth))
                except Exception as err:
                    runner.skip(scene, VAE_ROUND_TRIP, err)
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
    distribution_names = list(runner.distribution_metrics())
    descriptions.update({n: DISTRIBUTION_DESCRIPTIONS.get(n, n) for n in distribution_names})
    main = pipes
    incomplete = [s for s in runner.skipped if s["group"].split("/")[0] in ("generated", "baseline")]
    results = {
        "suite": str(suite.get("name", "world")),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "checkpoint": str(cfg.checkpoint) if cfg.get("checkpoint") else None,
        "clips_dir": str(folder) if folder is not None else None,
        "model_config_hash": main["generated"].config_hash if "generated" in main else None,
        "baseline_checkpoint": str(cfg.baseline_checkpoint) if cfg.get("baseline_checkpoint") else None,
        "baseline_config_hash": main["baseline"].config_hash if "baseline" in main else None,
        "format": fmt,
        "num_scenes": len(scenes),
        "seeds_per_scene": samples if folder is None else None,
        "scenes": [
            {"id": s.id, "seed": s.seed, "family": s.family, "prompt": s.truth.prompt} for s in scenes
        ],
        "headline": list(HEADLINE),
        "summary_numbers": [*SUMMARY, *distribution_names],
        "summary_descriptions": descriptions,
        "summary": summarise(runner.records, stats, distribution),
        "families": by_family(runner.records, groups),
        "paired": paired_comparisons(runner.records, groups, GROUND_TRUTH),
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
        "incomplete": len(incomplete),
        "clips": runner.records,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "report": "report.html",
    }
    results = _json_safe(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    report = write_report(results, out_dir)
    _print_summary(results, report)
    if incomplete and not cfg.get("allow_missing", False):
        raise IncompleteRunError(
            f"{len(incomplete)} clip(s) to score were not scored (first: {incomplete[0]['id']}: "
            f"{incomplete[0]['reason']}); results.json lists them under 'skipped'. Pass allow_missing=true "
            "to accept a partial run."
        )
    return results


def _print_summary(results: dict, report: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from eval.report import fmt

    numbers = results["headline"]
    table = Table(title=f"suite {results['suite']}: {results['num_scenes']} scene(s), 95% intervals")
    table.add_column("group", no_wrap=True)
    for n in numbers:
        table.add_column(n, justify="right")
    for group, row in results["summary"].items():
        cells = [
            f"{fmt(row.get(n))} [{fmt(row.get(f'{n}_lo'))}, {fmt(row.get(f'{n}_hi'))}] n={row.get(f'{n}_n')}"
            for n in numbers
        ]
        table.add_row(group, *cells)
    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 40 + 26 * len(numbers)))
    console.print(table)
    f = results["failures"]
    console.print(
        f"metric failures: {f['errors']} error(s), {f['missing']} missing input(s); "
        f"{len(results['skipped'])} clip(s) skipped ({results['incomplete']} of them generated/folder clips)"
    )
    console.print(f"[bold green]report: {report.resolve()}")


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except IncompleteRunError as err:
        print(f"incomplete run: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
