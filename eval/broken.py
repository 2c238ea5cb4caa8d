"""Deliberately broken clips built from synthetic-world ground truth, to show that each metric separates good
from bad.

Every function takes a ground-truth :class:`EvalClip` (video, audio, prompt and the generator's metadata) and
returns a new clip with one defect. The broken clip keeps the *original* metadata and prompt, because the
metadata is the truth the defect is measured against. Defects that move objects are made by editing a copy of
the metadata's tracks and re-rendering with ``data_pipelines.synthetic.render_frames``, so the broken clip has
exactly the ground truth's look (anti-aliasing, backdrop) and differs only in the defect.

| name | defect | metrics that must notice |
|---|---|---|
| ``frozen`` | the first frame repeated for the whole clip (sound kept) | dynamic_degree, sync_f1 |
| ``blank`` | every frame black (sound kept) | detection_rate, persistence, dynamic |
| ``objects_removed`` | the scene re-rendered without its objects (sound kept) | detection, colour_accuracy |
| ``audio_silenced`` | sound replaced by silence (same length) | sync_f1, loudness |
| ``mirrored`` | frames flipped left/right | left_right_accuracy, physics_gt |
| ``teleported`` | one object jumps 40 % of the width to free space for 3 frames | teleports, persistence |
| ``shuffled`` | frame order permuted | temporal, physics, persistence |
| ``gravity_reversed`` | vertical motion mirrored (objects fall up), re-rendered | gravity fit, physics_gt |
| ``time_reversed`` | frames in reverse order (bounces gain energy) | physics restitution |
| ``audio_shifted`` | sound delayed by 200 ms | sync_f1, onset_f1, av_align |
| ``flickering`` | per-frame brightness jitter (+-25 %, alternating) | temporal flickering, warping error |
| ``vanished`` | one object gone from mid-clip on | persistence, physics detection |
| ``recoloured`` | one object changes colour from mid-clip on | persistence |
| ``interpenetrating`` | one object glides into another until their centres meet | interpenetration |
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from eval.clip import EvalClip
from sora.media import encode_mp4, read_media

if TYPE_CHECKING:
    from data_pipelines.synthetic import Clip


def from_synthetic(clip: Clip) -> EvalClip:
    """An :class:`EvalClip` of a ``data_pipelines.synthetic.Clip`` (caption as prompt, metadata as truth)."""
    meta = clip.meta
    return EvalClip(
        video=clip.video,
        fps=float(meta["fps"]),
        audio=clip.audio,
        sample_rate=int(meta["sample_rate"]),
        prompt=clip.caption,
        meta=meta,
    )


def compressed(clip: EvalClip, crf: int = 18) -> EvalClip:
    """The clip after an H.264/AAC mp4 round trip (how generated clips are judged); not a defect."""
    media = read_media(encode_mp4(clip.video, clip.fps, clip.audio, clip.sample_rate, crf=crf))
    decoded = EvalClip.from_media(media, clip.prompt, clip.meta, given_frames=clip.given_frames)
    return dataclasses.replace(decoded, reference=clip.reference)


def _rerender(clip: EvalClip, edit: Callable[[dict], None]) -> np.ndarray:
    """Render the clip's metadata after ``edit`` changed a deep copy of it in place."""
    from data_pipelines.synthetic import render_frames

    meta = copy.deepcopy(clip.require_meta("broken clips"))
    edit(meta)
    return render_frames(meta)


def _moving_object(meta: dict) -> int:
    """Index of the object that travels farthest (the most informative one to break)."""
    paths = [np.hypot(np.diff(tr["x"]), np.diff(tr["y"])).sum() for tr in meta["tracks"]]
    return int(np.argmax(paths))


def frozen(clip: EvalClip) -> EvalClip:
    """A still picture: the first frame repeated for every frame (a model that does not animate)."""
    return dataclasses.replace(clip, video=np.repeat(clip.video[:1], clip.num_frames, axis=0))


def blank(clip: EvalClip) -> EvalClip:
    """Every frame black (a model that draws nothing)."""
    return dataclasses.replace(clip, video=np.zeros_like(clip.video))


def objects_removed(clip: EvalClip) -> EvalClip:
    """The scene re-rendered with every object moved far off-screen: backdrop and floor only."""
    clip.require_meta("objects_removed")

    def edit(m: dict) -> None:
        for tr in m["tracks"]:
            tr["x"] = [-10.0 * m["width"]] * len(tr["x"])

    return dataclasses.replace(clip, video=_rerender(clip, edit))


def audio_silenced(clip: EvalClip) -> EvalClip:
    """The sound replaced by digital silence of the same length."""
    return dataclasses.replace(clip, audio=np.zeros_like(clip.require_audio("audio_silenced")))


def mirrored(clip: EvalClip) -> EvalClip:
    """Left and right swapped: every frame flipped horizontally."""
    return dataclasses.replace(clip, video=np.ascontiguousarray(clip.video[:, :, ::-1]))


def teleported(clip: EvalClip, start: int | None = None, frames: int = 3, fraction: float = 0.4) -> EvalClip:
    """One object (the most moving one) displaced by ``fraction`` of the width for ``frames`` frames, towards
    whichever of left, right and up stays in the picture and keeps farthest from the other objects."""
    meta = clip.require_meta("teleported")
    index = _moving_object(meta)
    start = clip.num_frames // 2 if start is None else start
    span = range(start, min(start + frames, clip.num_frames))
    d, reach = fraction * float(meta["width"]), float(meta["objects"][index]["radius_px"])
    track = meta["tracks"][index]
    others = [tr for i, tr in enumerate(meta["tracks"]) if i != index]

    def clearance(dx: float, dy: float) -> float:
        inside = all(
            reach <= track["x"][t] + dx <= meta["width"] - 1 - reach
            and reach <= track["y"][t] + dy <= meta["scene"]["floor_y"] - reach
            for t in span
        )
        gaps = [
            np.hypot(track["x"][t] + dx - o["x"][t], track["y"][t] + dy - o["y"][t])
            for t in span
            for o in others
        ]
        return (min(gaps) if gaps else np.inf) if inside else -np.inf

    dx, dy = max([(d, 0.0), (-d, 0.0), (0.0, -d)], key=lambda off: clearance(*off))

    def edit(m: dict) -> None:
        for t in span:
            m["tracks"][index]["x"][t] += dx
            m["tracks"][index]["y"][t] += dy

    return dataclasses.replace(clip, video=_rerender(clip, edit))


def shuffled(clip: EvalClip, seed: int = 0) -> EvalClip:
    """Frames in a random order (no frame keeps its place)."""
    rng = np.random.default_rng(seed)
    n = clip.num_frames
    order = rng.permutation(n)
    while n > 1 and (order == np.arange(n)).any():
        order = rng.permutation(n)
    return dataclasses.replace(clip, video=clip.video[order])


def gravity_reversed(clip: EvalClip) -> EvalClip:
    """Vertical motion mirrored about the frame's middle and re-rendered: objects fall upwards, floor
    unchanged."""
    height = float(clip.require_meta("gravity_reversed")["height"])

    def edit(m: dict) -> None:
        for tr in m["tracks"]:
            tr["y"] = [height - 1.0 - y for y in tr["y"]]
            tr["angle"] = [-a for a in tr["angle"]]

    return dataclasses.replace(clip, video=_rerender(clip, edit))


def time_reversed(clip: EvalClip) -> EvalClip:
    """Frames played backwards (sound unchanged)."""
    return dataclasses.replace(clip, video=np.ascontiguousarray(clip.video[::-1]))


def audio_shifted(clip: EvalClip, shift_s: float = 0.2) -> EvalClip:
    """Sound delayed by ``shift_s`` seconds (negative: advanced), zero-filled, same length."""
    audio = clip.require_audio("audio_shifted")
    n = round(abs(shift_s) * clip.sample_rate)
    pad = np.zeros((audio.shape[0], n), audio.dtype)
    moved = (
        np.concatenate([pad, audio], axis=1)[:, : audio.shape[1]]
        if shift_s >= 0
        else (np.concatenate([audio, pad], axis=1)[:, n:])
    )
    return dataclasses.replace(clip, audio=moved)


def flickering(clip: EvalClip, amplitude: float = 0.25, seed: int = 0) -> EvalClip:
    """Each frame's brightness scaled by ``1 +- amplitude * u`` (``u`` uniform in [0.5, 1], sign
    alternating)."""
    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(clip.num_frames) % 2 == 0, 1.0, -1.0)
    gains = 1.0 + signs * amplitude * rng.uniform(0.5, 1.0, clip.num_frames)
    video = (
        np.clip(clip.video.astype(np.float32) * gains[:, None, None, None], 0, 255).round().astype(np.uint8)
    )
    return dataclasses.replace(clip, video=video)


def vanished(clip: EvalClip, start: int | None = None) -> EvalClip:
    """The most moving object removed (moved far off-screen) from frame ``start`` (default: mid-clip) on."""
    meta = clip.require_meta("vanished")
    index = _moving_object(meta)
    start = clip.num_frames // 2 if start is None else start

    def edit(m: dict) -> None:
        tr = m["tracks"][index]
        tr["x"] = tr["x"][:start] + [-10.0 * m["width"]] * (len(tr["x"]) - start)

    return dataclasses.replace(clip, video=_rerender(clip, edit))


def recoloured(clip: EvalClip, start: int | None = None) -> EvalClip:
    """The most moving object drawn in another palette colour (one no object uses) from ``start`` on."""
    from data_pipelines.synthetic import PALETTE

    meta = clip.require_meta("recoloured")
    index = _moving_object(meta)
    start = clip.num_frames // 2 if start is None else start
    used = {obj["color"] for obj in meta["objects"]}
    new = next(name for name in PALETTE if name not in used)

    def edit(m: dict) -> None:
        m["objects"][index]["color"], m["objects"][index]["rgb"] = new, list(PALETTE[new])

    video = clip.video.copy()
    video[start:] = _rerender(clip, edit)[start:]
    return dataclasses.replace(clip, video=video)


def interpenetrating(clip: EvalClip, start: int | None = None, glide: int = 6) -> EvalClip:
    """From ``start`` (default: mid-clip) the first object glides over ``glide`` frames into the second until
    their centres meet, and stays there (objects merging, a typical failure of video models)."""
    meta = clip.require_meta("interpenetrating")
    if len(meta["objects"]) < 2:
        raise ValueError("interpenetrating needs a clip with at least two objects")
    start = clip.num_frames // 2 if start is None else start

    def edit(m: dict) -> None:
        ta, tb = m["tracks"][0], m["tracks"][1]
        x0, y0 = ta["x"][start], ta["y"][start]
        for t in range(start, len(ta["x"])):
            w = min((t - start + 1) / glide, 1.0)
            ta["x"][t], ta["y"][t] = (1 - w) * x0 + w * tb["x"][t], (1 - w) * y0 + w * tb["y"][t]

    return dataclasses.replace(clip, video=_rerender(clip, edit))


BROKEN: dict[str, Callable[[EvalClip], EvalClip]] = {
    "frozen": frozen,
    "blank": blank,
    "objects_removed": objects_removed,
    "audio_silenced": audio_silenced,
    "mirrored": mirrored,
    "teleported": teleported,
    "shuffled": shuffled,
    "gravity_reversed": gravity_reversed,
    "time_reversed": time_reversed,
    "audio_shifted": audio_shifted,
    "flickering": flickering,
    "vanished": vanished,
    "recoloured": recoloured,
    "interpenetrating": interpenetrating,
}
"""Every defect with its default strength, by name."""
