"""Are the prompted objects there, in the named colour and shape? ``detection_rate`` and ``colour_accuracy``.

Ours, synthetic world (colour tracker of :mod:`eval.tracking`), generated frames only (the
:attr:`EvalClip.given_frames` leading frames are skipped):

* ``detection_rate`` — the fraction of (generated frame, expected object) pairs where the tracker finds the
  object. The expected objects are the ground-truth metadata's objects, else the palette colours the prompt
  names. ``[0, 1]``, higher is better. It is the companion of every tracker-based score: position error,
  persistence and the physics rates count a missing object as a failure, and this says how often that
  happened.
* ``colour_accuracy`` — over the objects the prompt names (a palette colour, with the shape word after it
  where there is one: "a red rubber ball"), the fraction whose tracked object has the named colour (found in
  more than half of the generated frames) and, where the prompt names a shape and the object is large enough
  to tell, that shape. ``[0, 1]``, higher is better; absent when the prompt names no palette colour.
  ``colour_named`` counts the named objects, ``shape_checked`` those whose shape was judged.

Shape (ours): per frame, ``fill`` is the mask's area over the area of its minimum-area rotated rectangle
(``cv2.minAreaRect`` of the pixel centres, plus one pixel each way) and ``roundness``
(:func:`eval.physics.roundness`) its area over the disc reaching its farthest pixel; an object is a box when
the median ``fill`` is at least :data:`BOX_FILL` (0.86) or its roundness is below :data:`BOX_ROUNDNESS`
(0.67), else a circle. On the world's clips after H.264 this separates every box from every disc whose
equivalent radius is at least :data:`MIN_SHAPE_RADIUS_PX` (4 px: discs fill 0.71-0.83 with roundness >= 0.68;
boxes fill >= 0.77 with roundness <= 0.65 below a fill of 0.86); smaller objects (the world's small size,
3 px) are pixel blobs whose shape cannot be told, and only their colour is judged.
"""

from __future__ import annotations

import cv2
import numpy as np

from eval.clip import EvalClip, MissingInput
from eval.physics import roundness
from eval.spatial import object_shapes
from eval.tracking import Track, prompt_colors, track_clip

BOX_FILL, BOX_ROUNDNESS, MIN_SHAPE_RADIUS_PX = 0.86, 0.67, 4.0
FOUND_FRACTION = 0.5


def rect_fill(mask: np.ndarray) -> float:
    """Area of a ``(H, W)`` bool mask over the area of its minimum rotated bounding rectangle."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return 0.0
    _, (w, h), _ = cv2.minAreaRect(np.stack([cols, rows], axis=1).astype(np.float32))
    return float(len(rows) / ((w + 1.0) * (h + 1.0)))


def classify_shape(tr: Track, frames: np.ndarray) -> str | None:
    """``"box"``/``"circle"`` from the masks on the bool ``frames`` (module docstring), ``None`` when the
    object is never seen there or is too small to tell."""
    seen = np.flatnonzero(tr.visible & frames)
    if len(seen) == 0 or np.sqrt(np.median(tr.area[seen]) / np.pi) < MIN_SHAPE_RADIUS_PX:
        return None
    fill = float(np.median([rect_fill(tr.masks[t]) for t in seen]))
    only_seen = Track(**{**tr.__dict__, "area": np.where(frames, tr.area, 0.0)})
    return "box" if fill >= BOX_FILL or roundness(only_seen) < BOX_ROUNDNESS else "circle"


def object_presence(clip: EvalClip) -> dict[str, float]:
    """``detection_rate`` and ``colour_accuracy`` of the generated frames (see module docstring)."""
    tracks = track_clip(clip)
    named = prompt_colors(clip.prompt)
    if clip.meta is None and not named:
        raise MissingInput("objects: the prompt names no palette colour and the clip has no metadata")
    if not tracks:
        raise MissingInput("objects: no object is expected (empty metadata and no colour in the prompt)")
    frames = clip.generated
    out = {"detection_rate": float(np.mean([tr.visible[frames].mean() for tr in tracks.values()]))}
    if named:
        by_color = {tr.color: tr for tr in tracks.values()}
        shapes = object_shapes(clip.prompt)
        ok, checked = [], 0
        for color in named:
            tr = by_color.get(color)
            good = tr is not None and tr.visible[frames].mean() > FOUND_FRACTION
            if good and color in shapes:
                seen_shape = classify_shape(tr, frames)
                checked += seen_shape is not None
                good = seen_shape in (None, shapes[color])
            ok.append(good)
        out.update(
            colour_accuracy=float(np.mean(ok)),
            colour_named=float(len(named)),
            shape_checked=float(checked),
        )
    return out
