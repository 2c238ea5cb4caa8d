"""Colour-segmentation object tracker for the synthetic world, shared by the physics, spatial and temporal
metrics.

The synthetic world (``data_pipelines.synthetic.palette``) draws objects in saturated palette colours at least
~85 RGB units apart, on dark, desaturated backdrops and a grey floor (every background pixel is ~120 RGB units
or more from every palette colour). So a pixel is labelled with its nearest palette colour when it lies within
:data:`COLOR_TOLERANCE` (80) of it, and is background otherwise. This survives H.264 at the project's CRF 18:
4:2:0 chroma blur moves the interior of the smallest (3 px radius) balls up to ~75 units off their colour, and
the anti-aliased rim, a blend with the dark backdrop, falls outside the tolerance (the mask covers pixels
about 2/3 or more inside the object). Tests check that every object of the fixture clips is found in every
frame after the mp4 round trip, within 1 px of its true centre.

Per colour and frame the largest 8-connected component that survives a 3x3 erosion is the object (blends on
the boundary between two touching objects, e.g. red+yellow looking orange, are one pixel thick and never
survive); further such components are counted in :attr:`Track.extra`. One object per colour is assumed, which
is how the world is built (captions name objects by colour). Positions are in image pixels (x right, y down)
with pixel (row ``i``, column ``j``) centred at ``(x=j, y=i)``, the convention of the metadata's tracks, so a
box edge lies half a pixel outside the outermost pixel centre.

Which objects a clip should show (:func:`track_clip`): the metadata's, else the palette colours its prompt
names (:func:`prompt_colors`), else those seen in the first frame. An expected object that is never found
gets an all-invisible track, so every metric built on the tracker counts it as a failure instead of dropping
it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from eval.clip import EvalClip
from eval.memo import Memo, content_key, read_only

COLOR_TOLERANCE = 80.0
"""Max RGB distance from a palette colour for a pixel to be labelled with it."""
_IN_FRAME = np.zeros((3, 3, 3), dtype=bool)
_IN_FRAME[1] = True  # 3x3 neighbourhood within a frame, never across frames (for (T, H, W) volumes)
DEFAULT_WORLD_HEIGHT_M, DEFAULT_GRAVITY = 2.0, 9.81
"""Used to derive gravity in px/s^2 for clips without metadata (``data_pipelines.synthetic.WorldConfig``
defaults)."""


@dataclass
class Track:
    """One object's per-frame measurements; arrays have length T, NaN (0 for ``area``) where it is not seen.

    Attributes:
        key: object id from the metadata, else the colour name.
        color: palette colour name; ``rgb``: its RGB value.
        expected: whether the object should be there (in the metadata, or seen in the first frame without it).
        x, y: centroid in pixels; ``area``: pixel count.
        bbox: ``(T, 4)`` ``[x0, y0, x1, y1]``, outer pixel edges.
        extra: number of further components of this colour per frame (duplicates, debris).
        masks: ``(T, H, W)`` bool mask of the object's component.
    """

    key: str
    color: str
    rgb: tuple[int, int, int]
    expected: bool
    x: np.ndarray
    y: np.ndarray
    area: np.ndarray
    bbox: np.ndarray
    extra: np.ndarray
    masks: np.ndarray

    @property
    def visible(self) -> np.ndarray:
        """``(T,)`` bool: the object was found in the frame."""
        return self.area > 0

    @property
    def radius(self) -> np.ndarray:
        """``(T,)`` equivalent radius ``sqrt(area / pi)`` in pixels (NaN where not visible)."""
        return np.where(self.visible, np.sqrt(self.area / math.pi), np.nan)


def default_palette() -> dict[str, tuple[int, int, int]]:
    """The synthetic world's object palette (name -> RGB)."""
    from data_pipelines.synthetic import PALETTE

    return dict(PALETTE)


def label_colors(
    video: np.ndarray, palette: dict[str, tuple[int, int, int]], tolerance: float = COLOR_TOLERANCE
) -> np.ndarray:
    """Per-pixel palette index ``(T, H, W)`` int8 (order of ``palette``), ``-1`` for background."""
    colors = np.asarray(list(palette.values()), dtype=np.float32)  # (K, 3)
    pixels = video.reshape(-1, 3)
    labels = np.empty(len(pixels), dtype=np.int8)
    # Squared distance |c|^2 - 2 c.p + |p|^2, the cross term one matmul and |p|^2 added to the nearest only:
    # exact in float32 for 8-bit pixels and colours (every term an integer below 2^24), so the labels are
    # those of the plain distance, 4x faster.
    chunk = max(1, (1 << 22) // max(1, len(colors)))  # pixels at a time: a (K, chunk) array of ~16 MB
    cc = (colors**2).sum(axis=1, keepdims=True)  # (K, 1)
    for start in range(0, len(pixels), chunk):
        p = pixels[start : start + chunk].astype(np.float32)
        d2 = cc - 2.0 * (colors @ p.T)  # (K, n): the squared distance less |p|^2
        nearest = d2.argmin(axis=0)
        best = np.take_along_axis(d2, nearest[None], axis=0)[0] + (p * p).sum(axis=1)
        labels[start : start + chunk] = np.where(best <= tolerance**2, nearest, -1)
    return labels.reshape(video.shape[:3])


_TRACKS = Memo(maxsize=4)  # the suite scores one clip at a time with every metric: a few clips suffice


def track_colors(
    video: np.ndarray, palette: dict[str, tuple[int, int, int]], tolerance: float = COLOR_TOLERANCE
) -> dict[str, Track]:
    """Track every palette colour that appears in uint8 ``(T, H, W, 3)`` ``video``; keys are colour names.

    Memoised by content (:mod:`eval.memo`): each call returns new :class:`Track` objects (their ``key`` and
    ``expected`` are the caller's to set) over shared read-only arrays."""
    key = content_key(video, sorted(palette.items()), float(tolerance))
    found = _TRACKS.get(key, lambda: _track_colors(video, palette, tolerance))
    return {name: replace(tr) for name, tr in found.items()}


def _track_colors(
    video: np.ndarray, palette: dict[str, tuple[int, int, int]], tolerance: float
) -> dict[str, Track]:
    labels = label_colors(video, palette, tolerance)
    num_frames, height, width = labels.shape
    tracks = {}
    for k, (name, rgb) in enumerate(palette.items()):
        present = labels == k
        if not present.any():
            continue
        # Components and erosion within each frame (the structuring elements do not reach across time).
        comp, _ = ndimage.label(present, structure=_IN_FRAME)
        blobs = np.unique(comp[ndimage.binary_erosion(present, structure=_IN_FRAME)])
        blobs = blobs[blobs > 0]
        if len(blobs) == 0:
            continue
        sizes = np.bincount(comp.ravel())
        boxes = ndimage.find_objects(comp)
        x, y = np.full(num_frames, np.nan), np.full(num_frames, np.nan)
        bbox = np.full((num_frames, 4), np.nan)
        area, extra = np.zeros(num_frames), np.zeros(num_frames)
        masks = np.zeros((num_frames, height, width), dtype=bool)
        for blob in sorted(blobs, key=lambda b: -sizes[b]):  # largest first: the first blob of a frame wins
            t = boxes[blob - 1][0].start
            if area[t] > 0:
                extra[t] += 1
                continue
            masks[t] = comp[t] == blob
            rows, cols = np.nonzero(masks[t])
            area[t] = len(rows)
            x[t], y[t] = cols.mean(), rows.mean()
            bbox[t] = [cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5]
        tracks[name] = Track(
            key=name,
            color=name,
            rgb=tuple(int(c) for c in rgb),
            expected=bool(area[0] > 0),
            x=x,
            y=y,
            area=area,
            bbox=bbox,
            extra=extra,
            masks=masks,
        )
        for a in (x, y, area, bbox, extra, masks):
            read_only(a)
    return tracks


def prompt_colors(prompt: str, palette: dict[str, tuple[int, int, int]] | None = None) -> list[str]:
    """Palette colour names the prompt mentions as words, in order of first mention (each once)."""
    names = list(palette or default_palette())
    pattern = r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b"
    return list(dict.fromkeys(m.group(1) for m in re.finditer(pattern, prompt.lower())))


def _missing_track(color: str, rgb: tuple[int, int, int], shape: tuple[int, int, int]) -> Track:
    """An all-invisible track of an expected object that is never found."""
    num_frames, height, width = shape
    nan = np.full(num_frames, np.nan)
    return Track(
        key=color,
        color=color,
        rgb=tuple(int(c) for c in rgb),
        expected=True,
        x=nan,
        y=nan.copy(),
        area=np.zeros(num_frames),
        bbox=np.full((num_frames, 4), np.nan),
        extra=np.zeros(num_frames),
        masks=np.zeros((num_frames, height, width), dtype=bool),
    )


def track_clip(
    clip: EvalClip,
    *,
    include_unexpected: bool = False,
    palette: dict[str, tuple[int, int, int]] | None = None,
) -> dict[str, Track]:
    """Track the objects of a synthetic-world clip.

    The *expected* objects are the ground-truth metadata's objects (tracks keyed by object id); without
    metadata, the palette colours the prompt names (keyed by colour); without either, the colours visible in
    the first frame. An expected object that is never seen gets an all-invisible track, so it counts as a
    failure wherever it is judged. Colours not expected are returned only if ``include_unexpected`` (e.g.
    recoloured or spurious objects, which persistence counts against a clip).
    """
    palette = dict(palette or default_palette())
    objects = (clip.meta or {}).get("objects")
    if objects:
        for obj in objects:  # metadata colours win (a custom palette may differ from the default one)
            palette[obj["color"]] = tuple(obj.get("rgb", palette.get(obj["color"], (0, 0, 0))))
    found = track_colors(clip.video, palette)
    shape = clip.video.shape[:3]
    if objects:
        wanted = [(str(obj["id"]), obj["color"]) for obj in objects]
    else:
        named = prompt_colors(clip.prompt, palette)
        wanted = [(c, c) for c in named] if named else [(c, c) for c, tr in found.items() if tr.expected]
    out = {}
    for key, color in wanted:
        tr = found.pop(color, None) or _missing_track(color, palette[color], shape)
        tr.key, tr.expected = key, True
        out[key] = tr
    if include_unexpected:
        for name, tr in found.items():
            tr.expected = False
            out[name] = tr
    return out


def gravity_px(clip: EvalClip) -> float:
    """Configured gravity in px/s^2 (down positive): ``meta["gravity_px_s2"]``, else the world defaults
    (9.81 m/s^2 with the image spanning 2 m vertically)."""
    if clip.meta and "gravity_px_s2" in clip.meta:
        return float(clip.meta["gravity_px_s2"])
    return DEFAULT_GRAVITY * clip.video.shape[1] / DEFAULT_WORLD_HEIGHT_M


def max_plausible_speed(clip: EvalClip) -> float:
    """Upper bound on an object's speed in px/s: the speed gained falling four image heights,
    ``sqrt(2 g (4 H))`` (400 px/s at 64x64), twice a drop from the top of the frame and above every launch the
    world's recipes use (the fastest, head-on ``collide`` launches, stay below ~300 px/s)."""
    return math.sqrt(2.0 * abs(gravity_px(clip)) * 4.0 * clip.video.shape[1])


def max_plausible_step(clip: EvalClip) -> float:
    """Largest plausible centroid move between consecutive frames, in px: one frame at
    :func:`max_plausible_speed` plus 2 px of segmentation jitter."""
    return max_plausible_speed(clip) / clip.fps + 2.0
