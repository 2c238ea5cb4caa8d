"""Physics metrics: against ground truth (phyworld style), against the laws (no ground truth), and Physics-IQ.

Objects are found by :mod:`eval.tracking` (colour segmentation). Positions are image pixels, y down.

``physics_gt`` — phyworld (Kang et al. 2024, "How Far is Video Generation from World Model: A Physical Law
Perspective"): each object's tracked centroid against the simulator's ground truth. ``pos_err_px`` is the mean
Euclidean centroid error, ``vel_err_px_s`` the mean Euclidean velocity error, with both velocities taken by
the same central difference of positions (``(p[t+1] - p[t-1]) fps / 2``, so a bounce between frames is
smoothed identically on both sides); ``vel_err_before_px_s`` / ``vel_err_after_px_s`` split it at the first
object-object contact (absent without one); ``shape_range_px`` is phyworld's shape consistency,
``max r - min r`` of the equivalent radius ``sqrt(area / pi)`` over frames (worst object). All errors are
``>= 0``, lower is better. **A missing object is a failure, never a dropped frame:** a frame where an expected
object is not found is charged :func:`failure_distance` (the frame diagonal, 90.5 px at 64x64) of position
error, a velocity that needs a missing frame is charged :func:`eval.tracking.max_plausible_speed` (400 px/s
at 64x64), and an object never found has a shape range of the diagonal; so a clip where nothing is found
scores the worst, not NaN. How often objects were missing is ``detection_rate`` (:mod:`eval.objects`).
Only generated frames are scored (:attr:`EvalClip.given_frames` leading frames are skipped), as phyworld
scores the frames after its conditioning frames.

``physics_laws`` — ours, no ground truth needed:

* Gravity fit: each object's track is cut into free-flight pieces by removing contact frames (second
  difference above :data:`IMPULSE_FACTOR` (2.5) g on either axis), still frames (vertical range < 0.5 px over
  +-3 frames) and supported frames (within half a radius + 1 px of the object's lowest position along gravity,
  where it rests, rolls or rocks). Pieces of at least :data:`MIN_SEGMENT` frames are fitted by least squares
  to ``y = c0_s + c1_s t + g t^2 / 2`` with per-piece offset and velocity and one shared ``g``; to be robust
  to a contact the cuts missed, only pieces that follow the length-weighted median of the pieces' own
  curvatures within 1 px RMS enter the shared fit (all pieces if those are too few). This gives
  ``gravity_fit_px_s2``, ``gravity_residual_px`` (RMS) and ``free_flight_frames``. ``gravity_fit`` is 1 when
  ``|g_fit - g| <= GRAVITY_TOLERANCE |g|`` (25 %) and the residual is <= :data:`RESIDUAL_TOLERANCE_PX` (1 px),
  0 otherwise; ``g`` is ``meta["gravity_px_s2"]`` or the world default. With fewer than
  :data:`MIN_FREE_FLIGHT` (8) free-flight frames there is nothing to fit: ``gravity_fit`` is then 0.0 (a
  failure) when the clip should show free flight (:func:`truth_has_flight`: its ground-truth tracks have
  enough free flight, or without metadata its prompt says something falls, is thrown, flies or bounces),
  and absent otherwise (static and sliding scenes: the suite's ``_n`` counts the clips that have it), so a
  frozen or blank clip of a falling scene fails instead of silently leaving the rate; ``gravity_fit_px_s2``
  and ``gravity_residual_px`` are present only when fitted. Time reversal keeps free flight parabolic with
  the same ``g``; it is caught by the restitution check, not this one.
* Missing objects: ``objects_missing`` counts expected objects (:func:`eval.tracking.track_clip`) found in
  fewer than 2 frames; teleports and overlaps cannot be judged for them, so ``no_teleport`` and
  ``no_interpenetration`` are 0 when it is > 0 (a blank clip no longer passes them).
* Teleporting: ``max_jump_ratio`` is the largest centroid move between consecutive detections divided by the
  plausible move (:func:`eval.tracking.max_plausible_step`); ``teleports`` counts moves with ratio > 1 (>= 0,
  lower is better); ``no_teleport`` is 1 when there is none.
* Interpenetration: objects in this flat world can touch but never overlap. With each object's equivalent
  radius ``r = sqrt(A / pi)`` (``A`` the 90th percentile of its area over frames, as an overlap may hide part
  of it for long), the overlap of a pair is the largest of three signs, each a fraction: the penetration depth
  ``r_a + r_b - centroid distance`` over the smaller diameter; the pixels an object loses while touching the
  other (the one drawn below loses what the other covers) beyond one rim row (``2 r`` pixels, the cost of the
  colour blend along a contact line), over ``A``; and 1 if an object last seen touching the other disappears.
  ``interpenetration`` is the maximum over frames and pairs (``[0, 1]``, lower is better);
  ``no_interpenetration`` is 1 when it is <= :data:`OVERLAP_TOLERANCE` (0.3). Touching objects stay below
  ~0.25 after H.264 (a square's equivalent radius exceeds its half side by 13 %, small discs lose their rim).
* Restitution: at each bounce of a ball off the scene's static boundaries, ``e = |v_after| / |v_before|`` of
  the velocity component that reverses (the one with the larger incoming speed, >= 30 px/s), from linear fits
  with the fitted (else configured) ``g`` over up to 4 free-flight frames on each side. Boxes are skipped (a
  tumbling box trades spin for speed at an impact), and so are contacts within 4 px of another object (an
  exchange of momentum may speed an object up); the shape comes from the metadata, else the prompt ("red
  ball"), else the mask's :func:`roundness`. ``max_restitution`` is the largest ``e``; ``restitution_ok`` is
  1 when it is ``<= 1 + RESTITUTION_TOLERANCE`` (0.1; bounces may not gain energy), 0 otherwise; both are
  absent without a measurable bounce (the suite's ``_n`` counts the clips that have one).

``physics_iq`` — Physics-IQ (Motamed et al. 2025) against ``clip.reference``: binary motion masks per frame
(grey, 5x5 Gaussian blur, running-average background ``cv2.accumulateWeighted(alpha=0.3)`` updated before the
difference, ``|frame - background| > 10``, 5x5 opening then closing, first frame empty), then ``spatial_iou``
(IoU of the masks' union over time), ``spatiotemporal_iou`` (per-frame IoU averaged over frames, 1 for two
empty masks), ``weighted_spatial_iou`` (``sum min(w_a, w_b) / sum max(w_a, w_b)`` of the per-pixel fraction of
frames with motion) — all ``[0, 1]``, higher is better — and ``mse`` (per-frame MSE of RGB in ``[0, 1]``,
averaged; ``[0, 1]``, lower is better). **Departures:** the benchmark computes the masks at each video's
full resolution (``binary_mask_generator.py``) and then, for the IoUs and the MSE, resizes masks and frames to
a quarter of the real take's width and height (``cv2.resize``, bilinear; masks re-binarised at 127, in
``calculate_and_write_metrics_to_csv.py``); our clips are already small, so we mask and score at the clip's
own resolution with the same 5x5 kernel (``kernel_size`` adjusts it) and no resize. It scores the frames after
its conditioning frames; we score the first ``min(T, T_ref)`` frames. We report the raw metrics,
not the Physics-IQ score, which needs the benchmark's pairs of real takes to normalise by physical variance.
"""

from __future__ import annotations

import math
import re

import cv2
import numpy as np
from scipy import ndimage

from eval.clip import EvalClip, MissingInput
from eval.spatial import object_shapes
from eval.tracking import Track, gravity_px, max_plausible_speed, track_clip

IMPULSE_FACTOR = 2.5
MIN_SEGMENT, MIN_FREE_FLIGHT = 5, 8
REST_WINDOW, REST_RANGE_PX, SUPPORT_MARGIN = 3, 0.5, 0.5
GRAVITY_TOLERANCE, RESIDUAL_TOLERANCE_PX = 0.25, 1.0
RESTITUTION_TOLERANCE, MIN_BOUNCE_SPEED, BOUNCE_FIT_FRAMES = 0.1, 30.0, 4
OVERLAP_TOLERANCE = 0.3
ROUND_OBJECT = 0.8
PIQ_ALPHA, PIQ_THRESHOLD = 0.3, 10
_FLIGHT_WORDS = (
    r"\b(?:falls?|drops?|dropped|thrown|throws?|toss(?:ed|es)?|flies|fly|bounces?|launched|lands?)\b"
)


# ---- against ground truth ------------------------------------------------------------------------------
def _central_velocity(x: np.ndarray, y: np.ndarray, fps: float) -> np.ndarray:
    """``(T, 2)`` velocity by central differences, NaN at the ends and next to missing frames."""
    v = np.full((len(x), 2), np.nan)
    v[1:-1, 0] = (x[2:] - x[:-2]) * fps / 2
    v[1:-1, 1] = (y[2:] - y[:-2]) * fps / 2
    return v


def failure_distance(clip: EvalClip) -> float:
    """The position error charged for a frame where an expected object is not found: the frame diagonal
    (px), the largest error a found object could have."""
    return float(math.hypot(clip.video.shape[1], clip.video.shape[2]))


def physics_gt(clip: EvalClip) -> dict[str, float]:
    """phyworld-style errors of the tracked objects against ``clip.meta`` (see module docstring)."""
    meta = clip.require_meta("physics_gt")
    tracks = track_clip(clip)
    if not tracks:
        raise MissingInput("physics_gt: the metadata lists no object")
    gt_tracks = {str(t["id"]): t for t in meta["tracks"]}
    object_contacts = [c["time"] for c in meta.get("contacts", []) if c["with"] == "object"]
    split = min(object_contacts) * clip.fps if object_contacts else math.inf
    frames = np.arange(clip.num_frames)
    generated = clip.generated
    miss_pos, miss_vel = failure_distance(clip), max_plausible_speed(clip)
    pos_err, vel_err, before, after, shape_range = [], [], [], [], []
    for key, tr in tracks.items():
        gt = gt_tracks[key]
        gx, gy = np.asarray(gt["x"], float), np.asarray(gt["y"], float)
        pos = np.where(tr.visible, np.hypot(tr.x - gx, tr.y - gy), miss_pos)
        pos_err.append(pos[generated])
        dv_true = _central_velocity(gx, gy, clip.fps)
        dv = np.linalg.norm(_central_velocity(tr.x, tr.y, clip.fps) - dv_true, axis=1)
        defined = np.isfinite(dv_true).all(axis=1) & generated  # the truth has a velocity there
        dv = np.where(np.isfinite(dv), dv, miss_vel)  # the object is missing next to the frame
        vel_err.append(dv[defined])
        before.append(dv[defined & (frames < split)])
        after.append(dv[defined & (frames > split)])
        seen = tr.visible & generated
        r = tr.radius[seen]
        shape_range.append(r.max() - r.min() if len(r) else miss_pos)
    mean = lambda parts: float(np.concatenate(parts).mean()) if sum(map(len, parts)) else float("nan")
    out = {
        "pos_err_px": mean(pos_err),
        "vel_err_px_s": mean(vel_err),
        "shape_range_px": float(max(shape_range)),
    }
    if object_contacts:
        for name, parts in (("vel_err_before_px_s", before), ("vel_err_after_px_s", after)):
            if sum(map(len, parts)):
                out[name] = mean(parts)
    return out


def truth_has_flight(clip: EvalClip) -> bool:
    """Whether the clip should show free flight to fit gravity on: with metadata, whether its ground-truth
    tracks have :data:`MIN_FREE_FLIGHT` free-flight frames (the same cuts as for the clip); without, whether
    the prompt says something falls, is thrown, flies or bounces."""
    if clip.meta is None or not clip.meta.get("tracks"):
        return re.search(_FLIGHT_WORDS, clip.prompt.lower()) is not None
    g = gravity_px(clip)
    radius = {str(o["id"]): float(o.get("radius_px", 3.0)) for o in clip.meta.get("objects", [])}
    pieces = []
    for gt in clip.meta["tracks"]:
        x, y = np.asarray(gt["x"], float), np.asarray(gt["y"], float)
        area = np.full(len(x), math.pi * radius.get(str(gt["id"]), 3.0) ** 2)
        empty = np.zeros((len(x), 1, 1), dtype=bool)
        tr = Track(str(gt["id"]), "", (0, 0, 0), True, x, y, area, np.zeros((len(x), 4)), area * 0, empty)
        pieces += [(p, y[p]) for p in _pieces(tr, clip.fps, g)[0]]
    return not math.isnan(fit_gravity(pieces, clip.fps)[0])


# ---- against the laws ----------------------------------------------------------------------------------
def _pieces(tr: Track, fps: float, g: float) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Free-flight pieces (frame index arrays, >= 2 frames) and contact clusters ``(first, last)`` of a
    track."""
    n = len(tr.x)
    vis = tr.visible
    impulse = np.zeros(n, dtype=bool)
    inner = vis[:-2] & vis[1:-1] & vis[2:]
    for p in (tr.x, tr.y):
        acc = np.zeros(n)
        acc[1:-1] = np.where(inner, np.abs(p[2:] - 2 * p[1:-1] + p[:-2]) * fps**2, 0.0)
        impulse |= acc > IMPULSE_FACTOR * abs(g)
    still = np.zeros(n, dtype=bool)
    for t in range(n):
        lo, hi = max(0, t - REST_WINDOW), min(n, t + REST_WINDOW + 1)
        still[t] = vis[lo:hi].all() and np.ptp(tr.y[lo:hi]) < REST_RANGE_PX
    supported = np.zeros(n, dtype=bool)
    if vis.any():  # near its lowest point along gravity an object rests, rolls or rocks on its support
        down = np.where(vis, np.sign(g) * tr.y, -np.inf)
        supported = vis & (down > down.max() - SUPPORT_MARGIN * np.nanmedian(tr.radius) - 1.0)
    free = vis & ~impulse & ~still & ~supported
    pieces = [
        run for run in np.split(np.arange(n), np.flatnonzero(np.diff(free.astype(int))) + 1) if free[run[0]]
    ]
    labels, count = ndimage.label(impulse)
    clusters = [
        (int(idx.min()), int(idx.max())) for idx in (np.flatnonzero(labels == i) for i in range(1, count + 1))
    ]
    return [p for p in pieces if len(p) >= 2], clusters


def _joint_fit(
    pieces_y: list[tuple[np.ndarray, np.ndarray]], fps: float, g_fixed: float | None = None
) -> tuple[float, np.ndarray]:
    """Least squares ``y = c0_s + c1_s t + g t^2 / 2`` (per-piece ``c0, c1``, shared ``g``, or ``g_fixed``).

    Returns ``(g, residuals)`` with residuals in the order of the pieces' frames.
    """
    total = sum(len(f) for f, _ in pieces_y)
    design = np.zeros((total, 2 * len(pieces_y) + 1))
    target = np.zeros(total)
    row = 0
    for s, (frames, y) in enumerate(pieces_y):
        tau = (frames - frames[0]) / fps
        sl = slice(row, row + len(frames))
        design[sl, 2 * s], design[sl, 2 * s + 1], design[sl, -1] = 1.0, tau, 0.5 * tau**2
        target[sl] = y
        row += len(frames)
    if g_fixed is not None:
        coef, *_ = np.linalg.lstsq(design[:, :-1], target - g_fixed * design[:, -1], rcond=None)
        return g_fixed, design[:, :-1] @ coef + g_fixed * design[:, -1] - target
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(coef[-1]), design @ coef - target


def fit_gravity(pieces_y: list[tuple[np.ndarray, np.ndarray]], fps: float) -> tuple[float, float, int]:
    """Robust shared-g fit over free-flight pieces ``(frames, y)``: ``(g_fit, residual_rms_px, frames_used)``.

    Pieces of at least :data:`MIN_SEGMENT` frames are used. A consensus ``g`` (median of the pieces' own
    curvatures, weighted by length) selects the pieces that follow it within :data:`RESIDUAL_TOLERANCE_PX` RMS
    (a piece that still holds an undetected contact or rolling does not); the shared-g least squares over
    those (over all pieces if they are too few) gives the result. NaN with fewer than :data:`MIN_FREE_FLIGHT`
    frames.
    """
    pieces_y = [(f, y) for f, y in pieces_y if len(f) >= MIN_SEGMENT]
    if sum(len(f) for f, _ in pieces_y) < MIN_FREE_FLIGHT:
        return float("nan"), float("nan"), sum(len(f) for f, _ in pieces_y)
    own = np.array([_joint_fit([p], fps)[0] for p in pieces_y])
    lengths = np.array([len(f) for f, _ in pieces_y], dtype=float)
    order = np.argsort(own)
    consensus = own[order][np.searchsorted(np.cumsum(lengths[order]), lengths.sum() / 2)]
    keep = [
        p
        for p in pieces_y
        if np.sqrt(np.mean(_joint_fit([p], fps, consensus)[1] ** 2)) <= RESIDUAL_TOLERANCE_PX
    ]
    if sum(len(f) for f, _ in keep) < MIN_FREE_FLIGHT:
        keep = pieces_y
    g, residual = _joint_fit(keep, fps)
    return g, float(np.sqrt(np.mean(residual**2))), sum(len(f) for f, _ in keep)


def _velocity_at(frames: np.ndarray, p: np.ndarray, t_c: float, fps: float, accel: float) -> float:
    """Velocity at frame time ``t_c`` of the fit ``p = c0 + v (t - t_c) + accel (t - t_c)^2 / 2``."""
    tau = (frames - t_c) / fps
    design = np.stack([np.ones_like(tau), tau], axis=1)
    coef, *_ = np.linalg.lstsq(design, p - 0.5 * accel * tau**2, rcond=None)
    return float(coef[1])


def _touches_other(tr: Track, others: list[Track], first: int, last: int) -> bool:
    """Whether another object's mask comes within 4 px of ``tr``'s around frames ``first..last``."""
    for t in range(max(first - 1, 0), min(last + 2, len(tr.x))):
        near = ndimage.binary_dilation(tr.masks[t], iterations=4)
        if any((near & o.masks[t]).any() for o in others):
            return True
    return False


def _is_round(tr: Track, clip: EvalClip) -> bool:
    """Whether the object is a ball: the metadata's shape, else the shape word the prompt gives its colour,
    else :func:`roundness` >= :data:`ROUND_OBJECT` (small discs after H.264 can look square; then no check is
    made)."""
    for obj in (clip.meta or {}).get("objects", []):
        if obj["color"] == tr.color:
            return obj["shape"] == "circle"
    shape = object_shapes(clip.prompt).get(tr.color)
    return shape == "circle" if shape else roundness(tr) >= ROUND_OBJECT


def roundness(tr: Track) -> float:
    """Median over frames of ``area / (pi (max centroid-pixel distance + 0.5)^2)``: ~0.85-1 for a disc,
    ~0.65 for a square at any angle (0 if never seen)."""
    values = []
    for t in np.flatnonzero(tr.visible):
        rows, cols = np.nonzero(tr.masks[t])
        reach = np.sqrt((cols - tr.x[t]) ** 2 + (rows - tr.y[t]) ** 2).max() + 0.5
        values.append(len(rows) / (np.pi * reach**2))
    return float(np.median(values)) if values else 0.0


def _restitutions(
    tr: Track,
    others: list[Track],
    pieces: list[np.ndarray],
    clusters: list[tuple[int, int]],
    fps: float,
    g: float,
) -> list[float]:
    """``|v_after| / |v_before|`` at each bounce of a round object off the scene's static boundaries.

    Per contact the velocity component with the largest incoming speed among those that reverse is used (the
    normal one). Contacts next to another object are skipped (momentum exchange may legitimately speed an
    object up); the caller skips boxes (a tumbling box trades spin for speed at impacts).
    """
    out = []
    for first, last in clusters:
        prev = next((p for p in pieces if p[-1] == first - 1), None)
        nxt = next((p for p in pieces if p[0] == last + 1), None)
        if prev is None or nxt is None or _touches_other(tr, others, first, last):
            continue
        prev, nxt = prev[-BOUNCE_FIT_FRAMES:], nxt[:BOUNCE_FIT_FRAMES]
        t_c = (first + last) / 2
        reversals = []
        for p, accel in ((tr.x, 0.0), (tr.y, g)):
            v_in = _velocity_at(prev, p[prev], t_c, fps, accel)
            v_out = _velocity_at(nxt, p[nxt], t_c, fps, accel)
            if abs(v_in) >= MIN_BOUNCE_SPEED and np.sign(v_in) != np.sign(v_out):
                reversals.append((abs(v_in), abs(v_out) / abs(v_in)))
        if reversals:
            out.append(max(reversals)[1])
    return out


def _jump_ratios(tr: Track, clip: EvalClip) -> np.ndarray:
    """Centroid moves between consecutive detections over the plausible move for the elapsed frames."""
    t = np.flatnonzero(tr.visible)
    if len(t) < 2:
        return np.zeros(0)
    move = np.hypot(np.diff(tr.x[t]), np.diff(tr.y[t]))
    return move / (max_plausible_speed(clip) * np.diff(t) / clip.fps + 2.0)


def _interpenetration(tracks: list[Track]) -> float:
    """Largest overlap of two objects as a fraction of the smaller one (see module docstring)."""
    worst = 0.0
    # an object's whole size: a high percentile, as an overlap may hide part of it for most of the clip
    area = [np.percentile(tr.area[tr.visible], 90) if tr.visible.any() else 0.0 for tr in tracks]
    radius = [np.sqrt(a / np.pi) for a in area]
    for i, a in enumerate(tracks):
        for j, b in enumerate(tracks):
            if i == j or not a.visible.any() or not b.visible.any():
                continue
            reach = radius[i] + radius[j]
            gap = np.hypot(a.x - b.x, a.y - b.y)  # NaN where either is missing
            depth = np.nan_to_num(reach - gap, nan=0.0) / (2 * min(radius[i], radius[j]))
            touching = gap < reach + 2.0  # False where either is missing
            lost = np.where(touching, (area[i] - a.area - 2 * radius[i]) / area[i], 0.0)
            entered = np.hypot(a.x[:-1] - b.x[1:], a.y[:-1] - b.y[1:]) < reach + 2.0  # a was last seen at b
            vanished = (a.visible[:-1] & ~a.visible[1:] & b.visible[1:] & entered).any()
            worst = max(worst, depth.max(), lost.max(), float(vanished))
    return float(np.clip(worst, 0.0, 1.0))


def physics_laws(clip: EvalClip) -> dict[str, float]:
    """Consistency with the world's laws, no ground truth needed (see module docstring for keys and
    ranges)."""
    tracks = list(track_clip(clip).values())
    g = gravity_px(clip)
    per_track = [(tr, *_pieces(tr, clip.fps, g)) for tr in tracks]
    g_fit, residual, used = fit_gravity(
        [(p, tr.y[p]) for tr, pieces, _ in per_track for p in pieces], clip.fps
    )
    missing = sum(int(tr.visible.sum() < 2) for tr in tracks)  # expected objects never (really) found
    out: dict[str, float] = {"free_flight_frames": float(used), "objects_missing": float(missing)}
    if not math.isnan(g_fit):
        ok = abs(g_fit - g) <= GRAVITY_TOLERANCE * abs(g) and residual <= RESIDUAL_TOLERANCE_PX
        out.update(gravity_fit=float(ok), gravity_fit_px_s2=g_fit, gravity_residual_px=residual)
    elif truth_has_flight(clip):  # something should fly and nothing measurably does: a failure
        out["gravity_fit"] = 0.0
    g_bounce = g_fit if not math.isnan(g_fit) else g
    rest = [
        e
        for tr, pieces, clusters in per_track
        if _is_round(tr, clip)
        for e in _restitutions(tr, [o for o in tracks if o is not tr], pieces, clusters, clip.fps, g_bounce)
    ]
    ratios = np.concatenate([_jump_ratios(tr, clip) for tr in tracks]) if tracks else np.zeros(0)
    overlap = _interpenetration(tracks)
    out.update(
        max_jump_ratio=float(ratios.max()) if len(ratios) else 0.0,
        teleports=float((ratios > 1).sum()),
        no_teleport=float(not (ratios > 1).any() and not missing),
        interpenetration=overlap,
        no_interpenetration=float(overlap <= OVERLAP_TOLERANCE and not missing),
    )
    if rest:
        out.update(max_restitution=max(rest), restitution_ok=float(max(rest) <= 1 + RESTITUTION_TOLERANCE))
    return out


# ---- Physics-IQ ----------------------------------------------------------------------------------------
def motion_masks(video: np.ndarray, kernel_size: int = 5, threshold: int = PIQ_THRESHOLD) -> np.ndarray:
    """Physics-IQ binary motion masks ``(T, H, W)`` bool of a uint8 RGB video (first frame empty)."""
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    blur = lambda f: cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (5, 5), 0)
    background = blur(video[0]).astype(np.float64)
    masks = np.zeros(video.shape[:3], dtype=bool)
    for t in range(1, len(video)):
        gray = blur(video[t])
        cv2.accumulateWeighted(gray.astype(np.float64), background, PIQ_ALPHA)
        diff = cv2.absdiff(gray, cv2.convertScaleAbs(background))
        _, binary = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
        masks[t] = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel) > 0
    return masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def physics_iq_scores(video: np.ndarray, reference: np.ndarray, kernel_size: int = 5) -> dict[str, float]:
    """Physics-IQ metrics of ``video`` against ``reference`` (uint8 ``(T, H, W, 3)``, first ``min(T)``
    frames)."""
    n = min(len(video), len(reference))
    video, reference = video[:n], reference[:n]
    ma, mb = motion_masks(video, kernel_size), motion_masks(reference, kernel_size)
    wa, wb = ma.mean(axis=0), mb.mean(axis=0)
    union = np.maximum(wa, wb).sum()
    mse = ((video.astype(np.float64) - reference.astype(np.float64)) / 255.0) ** 2
    return {
        "spatial_iou": _iou(ma.any(axis=0), mb.any(axis=0)),
        "spatiotemporal_iou": float(np.mean([_iou(a, b) for a, b in zip(ma, mb, strict=True)])),
        "weighted_spatial_iou": float(np.minimum(wa, wb).sum() / union) if union else 1.0,
        "mse": float(mse.reshape(n, -1).mean(axis=1).mean()),
    }


def physics_iq(clip: EvalClip) -> dict[str, float]:
    """Physics-IQ metrics of ``clip`` against ``clip.reference`` (see module docstring)."""
    return physics_iq_scores(clip.video, clip.require_reference("physics_iq").video)
