"""Motion guard: VBench ``dynamic_degree`` and ``motion_smoothness``, weight-free.

A frozen first frame scores perfectly on flickering, warping error, persistence and left/right; these two
scores are the guard against a video that does not move (``dynamic_degree``) or moves in jumps
(``motion_smoothness``). Both look only at the generated frames (:attr:`EvalClip.given_frames` leading
frames are skipped).

* ``dynamic_degree`` — VBench (Huang et al. 2024, ``vbench/dynamic_degree.py``): frames are sampled every
  ``max(1, round(fps / 8))`` frames; for each pair of consecutive samples the optical flow's magnitude is
  taken and its largest 5 % (``int(H W 0.05)`` pixels) are averaged; the pair moves when that exceeds
  ``max(1, 8 / fps) * 6 * min(H, W) / 256`` px; the clip is dynamic (1.0) when at least
  ``round(4 N / 16)`` pairs move (``N`` sampled frames), else 0.0. Higher is better for prompts that ask for
  motion. **Departures:** RAFT (weights) is replaced by OpenCV Farneback flow with AV-Align's parameters
  (:data:`eval.temporal.FARNEBACK`), so no weights are needed; Farneback is smoother than RAFT and
  underestimates the peak flow of small objects, so absolute rates are not comparable with VBench tables.
  The needed count is at least 1 (VBench's is 0 for clips of at most two samples, which then always pass).
  Reported only when the clip should move: with ground-truth metadata, when some object moves by more than
  :data:`STATIC_PX` over the generated frames (a scene whose truth is still has no motion to ask for, and
  the key is absent); without metadata, always (as VBench).
  ``dynamic_pairs`` is the fraction of sampled pairs that move, ``[0, 1]``.
* ``motion_smoothness`` — VBench (``vbench/motion_smoothness.py``): the odd frames are dropped, each is
  re-created by interpolating its two even neighbours, and the score is ``(255 - mean |I - I_interp|) / 255``
  over the odd frames (uint8 RGB). ``[0, 1]``, higher is better; a still video scores 1, so read it beside
  ``dynamic_degree``. **Departure:** VBench interpolates with the AMT-S network (weights); we interpolate
  with Farneback flow and Super SloMo's intermediate-flow approximation (Jiang et al. 2018) at ``t = 1/2``:
  ``F_{t->0} = (F_{1->0} - F_{0->1}) / 4``, ``F_{t->1} = (F_{0->1} - F_{1->0}) / 4``, ``I_t`` the mean of
  ``I_0`` and ``I_1`` backward-warped by them. Smooth, continuous motion is predicted well (ground truth of
  the synthetic world scores ~0.99); jumps, shuffled frames and flicker are not.
"""

from __future__ import annotations

import numpy as np

from eval.clip import EvalClip
from eval.temporal import _warp, farneback_flow

SAMPLE_FPS = 8.0
TOP_FRACTION = 0.05
THRESHOLD_PX_AT_256 = 6.0
STATIC_PX = 1.0
"""A ground-truth object moving less than this over the generated frames is still (px)."""


def peak_flow(flow: np.ndarray) -> float:
    """Mean of the largest :data:`TOP_FRACTION` of the flow magnitudes of ``(H, W, 2)`` ``flow`` (px)."""
    rad = np.hypot(flow[..., 0], flow[..., 1]).ravel()
    k = max(1, int(rad.size * TOP_FRACTION))
    return float(np.partition(rad, rad.size - k)[rad.size - k :].mean())


def dynamic_scores(video: np.ndarray, fps: float) -> tuple[np.ndarray, float, int]:
    """Per sampled pair :func:`peak_flow` ``(N - 1,)``, VBench's threshold (px) and needed count."""
    step = max(1, round(fps / SAMPLE_FPS))
    frames = video[::step]
    if len(frames) < 2:
        raise ValueError(f"dynamic_degree needs at least 2 sampled frames, got {len(frames)} (step {step})")
    threshold = max(1.0, SAMPLE_FPS / fps) * THRESHOLD_PX_AT_256 * min(video.shape[1:3]) / 256.0
    needed = max(1, round(4 * len(frames) / 16))
    scores = np.asarray([peak_flow(farneback_flow(a, b)) for a, b in zip(frames[:-1], frames[1:])])
    return scores, threshold, needed


def truth_moves(clip: EvalClip) -> bool:
    """Whether some ground-truth object moves more than :data:`STATIC_PX` over the generated frames (True
    without metadata)."""
    if clip.meta is None or not clip.meta.get("tracks"):
        return True
    start = clip.given_frames
    for tr in clip.meta["tracks"]:
        x, y = np.asarray(tr["x"], float)[start:], np.asarray(tr["y"], float)[start:]
        if len(x) and np.hypot(x - x[0], y - y[0]).max() > STATIC_PX:
            return True
    return False


def interpolate_middle(frame_0: np.ndarray, frame_1: np.ndarray) -> np.ndarray:
    """The frame half-way between two uint8 RGB frames (flow-based, see module docstring), float32."""
    f01, f10 = farneback_flow(frame_0, frame_1), farneback_flow(frame_1, frame_0)
    f_t0, f_t1 = (f10 - f01) / 4.0, (f01 - f10) / 4.0
    a = _warp(frame_0.astype(np.float32), f_t0)
    b = _warp(frame_1.astype(np.float32), f_t1)
    return 0.5 * (a + b)


def motion_smoothness_score(video: np.ndarray) -> float:
    """VBench motion smoothness of a uint8 ``(T, H, W, 3)`` video with our interpolator, ``[0, 1]``."""
    if len(video) < 3:
        raise ValueError(f"motion smoothness needs at least 3 frames, got {len(video)}")
    errors = [
        np.abs(interpolate_middle(video[t - 1], video[t + 1]) - video[t].astype(np.float32)).mean()
        for t in range(1, len(video) - 1, 2)
    ]
    return float((255.0 - np.mean(errors)) / 255.0)


def motion_metrics(clip: EvalClip) -> dict[str, float]:
    """``dynamic_degree`` (0/1, absent when the truth is still), ``dynamic_pairs`` ([0, 1]) and
    ``motion_smoothness`` ([0, 1]) of the generated frames (see module docstring)."""
    video = clip.video[clip.given_frames :]
    out = {"motion_smoothness": motion_smoothness_score(video)}
    if truth_moves(clip):
        scores, threshold, needed = dynamic_scores(video, clip.fps)
        moving = scores > threshold
        out["dynamic_degree"] = float(moving.sum() >= needed)
        out["dynamic_pairs"] = float(moving.mean())
    return out
