"""Any model's clips, the way VBench scores them: the suite writes what to generate, another model generates
it, the suite scores what comes back.

    python -m eval.suite suite=world prompts_out=DIR        # DIR/prompts.jsonl, DIR/suite.json, DIR/inputs/,
                                                            # DIR/ground_truth/<id>.mp4
    python -m eval.suite suite=world clips=DIR out_dir=OUT  # scores DIR/<id>.mp4 for every line

``prompts.jsonl`` has one JSON object per clip to generate:

* ``id``: the clip's file name without ``.mp4`` (``scene003_i2v``; ``_s1``... for extra seeds)
* ``mode``: ``t2av``, ``i2v``, ``extend``, ``v2a``, ``a2v`` or ``remix`` (:data:`sora.pipeline.MODES`)
* ``prompt``: the text
* ``seconds``, ``num_frames``: the clip's length (``num_frames / fps``)
* ``fps``, ``width``, ``height``: the frame format every clip must have
* ``seed``: a seed for the generator (several per scene with ``suite.seeds_per_scene``)
* ``image``: i2v: the first frame (PNG), relative to DIR
* ``video``: extend: the first ``given_frames`` frames with their sound (mp4); v2a: the silent ground-truth
  video; remix: the ground-truth clip (with ``strength``)
* ``audio``: a2v: the ground-truth sound (16-bit WAV)
* ``given_frames``: how many leading frames of the result are the conditioning (i2v 1, extend the context
  length): they are not judged
* ``scene_id``, ``family``, ``world_seed``, ``sample``: which held-out scene of the synthetic world it is

``suite.json`` holds the clip format and the world definition, so scoring rebuilds exactly these scenes
(their ground-truth tracks, contacts and sound) whatever ``suite=`` overrides the scoring run gets. A clip
must have the asked frame size and fps and at least ``num_frames`` frames (longer ones are cut, and the cut is
recorded); anything else, a missing file or an undecodable one is a skipped clip with its reason.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from eval.clip import EvalClip

PROMPTS = "prompts.jsonl"
SPEC = "suite.json"
SPEC_VERSION = 1


def given_frames(mode: str, context_frames: int) -> int:
    """Leading frames of a clip in ``mode`` that were conditioning: i2v 1, extend ``context_frames``, else 0
    (v2a is given the whole video, but what it makes is sound; its video metrics describe the input)."""
    return {"i2v": 1, "extend": int(context_frames)}.get(mode, 0)


def generation_seed(world_seed: int, sample: int) -> int:
    """The generator seed of a scene's ``sample``-th clip: the scene's world seed first (as before seeds per
    scene existed), then steps of 1,000,003 so no two scenes of a suite share one."""
    return int(world_seed) + 1_000_003 * int(sample)


def clip_id(scene_id: str, mode: str, sample: int) -> str:
    return f"{scene_id}_{mode}" + (f"_s{sample}" if sample else "")


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Mono float ``(1, S)`` in ``[-1, 1]`` as 16-bit PCM WAV."""
    pcm = np.round(np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())


def write_inputs(truth: EvalClip, scene_id: str, modes: list[str], context_frames: int, out: Path) -> dict:
    """The conditioning files of one scene under ``out/inputs/`` (only those its modes use); returns
    ``{"image" | "context" | "silent_video" | "video" | "audio": path relative to out}``."""
    from PIL import Image

    from sora import media

    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    if "i2v" in modes:
        Image.fromarray(truth.video[0]).save(inputs / f"{scene_id}_first_frame.png")
        paths["image"] = f"inputs/{scene_id}_first_frame.png"
    if "extend" in modes:
        samples = round(context_frames / truth.fps * truth.sample_rate)
        audio = truth.audio[:, :samples] if truth.audio is not None else None
        media.write_mp4(
            inputs / f"{scene_id}_context.mp4",
            truth.video[:context_frames],
            truth.fps,
            audio,
            truth.sample_rate,
        )
        paths["context"] = f"inputs/{scene_id}_context.mp4"
    if "v2a" in modes:
        media.write_mp4(inputs / f"{scene_id}_video.mp4", truth.video, truth.fps, None, truth.sample_rate)
        paths["silent_video"] = f"inputs/{scene_id}_video.mp4"
    if "remix" in modes:
        media.write_mp4(
            inputs / f"{scene_id}_clip.mp4", truth.video, truth.fps, truth.audio, truth.sample_rate
        )
        paths["video"] = f"inputs/{scene_id}_clip.mp4"
    if "a2v" in modes:
        if truth.audio is None:
            raise ValueError(f"{scene_id}: a2v needs the scene's sound and it has none")
        write_wav(inputs / f"{scene_id}_audio.wav", truth.audio, truth.sample_rate)
        paths["audio"] = f"inputs/{scene_id}_audio.wav"
    return paths


def line(
    scene: Any, mode: str, sample: int, fmt: dict, inputs: dict, context_frames: int, strength: float
) -> dict:
    """One ``prompts.jsonl`` row (see the module docstring)."""
    row: dict[str, Any] = {
        "id": clip_id(scene.id, mode, sample),
        "mode": mode,
        "prompt": scene.truth.prompt,
        "seconds": fmt["num_frames"] / fmt["fps"],
        "num_frames": fmt["num_frames"],
        "fps": fmt["fps"],
        "width": fmt["width"],
        "height": fmt["height"],
        "seed": generation_seed(scene.seed, sample),
        "given_frames": given_frames(mode, context_frames),
        "scene_id": scene.id,
        "family": scene.family,
        "world_seed": scene.seed,
        "sample": sample,
    }
    if mode == "i2v":
        row["image"] = inputs["image"]
    elif mode == "extend":
        row["video"] = inputs["context"]
    elif mode == "v2a":
        row["video"] = inputs["silent_video"]
    elif mode == "remix":
        row.update(video=inputs["video"], strength=strength)
    elif mode == "a2v":
        row["audio"] = inputs["audio"]
    return row


def read_prompts(folder: str | Path) -> tuple[dict, list[dict]]:
    """``(suite.json, prompts.jsonl rows)`` of a folder written by ``prompts_out``."""
    folder = Path(folder)
    spec_path, rows_path = folder / SPEC, folder / PROMPTS
    for path in (spec_path, rows_path):
        if not path.is_file():
            raise ValueError(
                f"{path} not found: clips=DIR needs the folder prompts_out=DIR wrote (plus the clips)"
            )
    spec = json.loads(spec_path.read_text())
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"{spec_path}: version {spec.get('version')!r}, this suite reads {SPEC_VERSION}")
    rows = []
    for i, text in enumerate(rows_path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{rows_path}:{i}: not JSON ({err})") from err
        missing = {"id", "mode", "scene_id"} - set(row)
        if missing:
            raise ValueError(f"{rows_path}:{i}: missing {sorted(missing)}")
        if "/" in row["id"] or "\\" in row["id"] or row["id"].startswith("."):
            raise ValueError(f"{rows_path}:{i}: id {row['id']!r} is not a plain file name")
        rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{rows_path}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return spec, rows


def load_clip(folder: str | Path, row: dict, fmt: dict, truth: EvalClip) -> tuple[EvalClip, dict]:
    """``DIR/<id>.mp4`` as an :class:`EvalClip` judged against ``truth`` (its metadata and reference), cut to
    ``fmt["num_frames"]``; ``(clip, notes)`` with ``notes`` saying what was cut. Raises ``ValueError`` when
    the file is missing or has the wrong size, fps or too few frames."""
    from sora import media

    path = Path(folder) / f"{row['id']}.mp4"
    if not path.is_file():
        raise ValueError(f"missing clip {path}")
    decoded = media.read_media(path)
    t, h, w, _ = decoded.video.shape
    if (h, w) != (fmt["height"], fmt["width"]):
        raise ValueError(f"{path.name}: {w}x{h} frames, the prompt asks for {fmt['width']}x{fmt['height']}")
    if abs(float(decoded.fps) - float(fmt["fps"])) > 1e-3 * float(fmt["fps"]):
        raise ValueError(f"{path.name}: {decoded.fps} fps, the prompt asks for {fmt['fps']}")
    n = int(fmt["num_frames"])
    if t < n:
        raise ValueError(f"{path.name}: {t} frames, the prompt asks for {n}")
    notes = {"frames_cut": t - n} if t > n else {}
    audio = decoded.audio
    if audio is not None and decoded.sample_rate:
        keep = round(n / float(fmt["fps"]) * decoded.sample_rate)
        if audio.shape[-1] > keep:
            notes["audio_samples_cut"] = int(audio.shape[-1] - keep)
        audio = audio[..., :keep]
    clip = EvalClip(
        video=decoded.video[:n],
        fps=float(decoded.fps),
        audio=audio,
        sample_rate=decoded.sample_rate or truth.sample_rate,
        prompt=str(row.get("prompt", truth.prompt)),
        meta=truth.meta,
        reference=truth,
        given_frames=min(int(row.get("given_frames", 0)), n - 1),
    )
    return clip, notes


def write_prompts(cfg: DictConfig) -> Path:
    """``prompts_out=DIR``: ``DIR/prompts.jsonl``, ``DIR/suite.json``, the conditioning files under
    ``DIR/inputs/`` and each line's ground truth as ``DIR/ground_truth/<id>.mp4`` (see
    :mod:`eval.prompts`); returns the prompts file."""
    from eval.scenes import clip_format, make_scenes, scene_specs, suite_world
    from sora import media

    suite, out = cfg.suite, Path(cfg.prompts_out)
    fmt = clip_format(suite, None)
    specs = scene_specs(suite)
    scenes = make_scenes(suite_world(suite), fmt, specs)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    modes, ctx, samples = list(suite.modes), int(suite.context_frames), int(suite.get("seeds_per_scene", 1))
    rows = []
    for scene in scenes:
        inputs = write_inputs(scene.truth, scene.id, modes, ctx, out)
        for mode in modes:
            for sample in range(samples):
                row = line(scene, mode, sample, fmt, inputs, ctx, float(suite.get("strength", 0.7)))
                t = scene.truth
                media.write_mp4(
                    out / "ground_truth" / f"{row['id']}.mp4", t.video, t.fps, t.audio, t.sample_rate
                )
                rows.append(row)
    spec = {
        "version": SPEC_VERSION,
        "suite": str(suite.get("name", "world")),
        "format": fmt,
        "world": suite_world(suite),
        "scenes": specs,
        "modes": modes,
        "seeds_per_scene": samples,
        "context_frames": ctx,
    }
    (out / SPEC).write_text(json.dumps(spec, indent=2))
    path = out / PROMPTS
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    print(f"{len(rows)} clip(s) to generate: {path.resolve()}; put each as {out.resolve()}/<id>.mp4")
    return path
