"""Temporal coherence: VBench temporal flickering, EvalCrafter-style warping error, object persistence, and
VBench subject/background consistency when feature weights are given.

* ``temporal_flickering`` — VBench (Huang et al. 2024) ``temporal_flickering``: the mean absolute difference
  of consecutive uint8 frames over all pixels and channels, averaged over frame pairs, mapped to
  ``(255 - mae) / 255``. Range ``[0, 1]``, higher is better (1 = no change at all). VBench applies it to
  static-scene prompts only; on moving scenes the score also drops with legitimate motion, so compare like
  with like.
* ``warping_error`` — EvalCrafter (Liu et al. 2024) warping error, which follows Lai et al. 2018 ("Learning
  Blind Video Temporal Consistency", reference code ``phoenix104104/fast_blind_video_consistency``): frame t+1
  is warped back to frame t with the forward flow ``F``; a pixel is occluded if it fails the forward-backward
  check ``|F + B(x + F)|^2 > 0.01 (|F|^2 + |B(x + F)|^2) + 0.5`` (``B`` the backward flow) or lies on a
  motion boundary of ``F``, where the squared forward differences ``(F(x) - F(x + 1))^2`` along x and along y
  (0 on the last column/row), summed over both components, exceed ``0.01 |F|^2 + 0.002`` (Lai's
  ``compute_flow_gradients`` / ``detect_occlusion``, called there with the flows in this order so the mask
  lives on frame t); the error is the squared difference of RGB values in ``[0, 1]``, **averaged** over the
  three channels and the non-occluded pixels (Lai's ``evaluate_WarpError.py`` divides the sum by the count
  of non-occluded pixel-channels; all pixels when none is valid), then averaged over frame pairs.
  **Departure:** FlowNet2/RAFT is replaced by OpenCV Farneback flow (pyr_scale 0.5, levels 3, winsize 15,
  iterations 3, poly_n 5, poly_sigma 1.2: the parameters AV-Align uses), so no weights are needed; absolute
  numbers are not comparable with learned-flow tables, rankings are. Range ``[0, 1]``, lower is better.
* ``object_persistence`` — ours, synthetic world: with the colour tracker, each expected object (of the
  ground-truth metadata, else named in the prompt, else seen in the first frame) must be found in every frame
  with the same colour, an area within a factor :data:`AREA_TOLERANCE` of its median area, and no jump larger
  than the plausible-speed bound of :func:`eval.tracking.max_plausible_step`; no object of another palette
  colour may appear. A frame transition ``t-1 -> t`` is broken if any object fails there, so a missing object
  breaks every transition it misses (a never-found object scores 0). ``persistence`` is the fraction of
  unbroken transitions (``[0, 1]``, higher is better) and ``persistence_breaks`` their count (``>= 0``, lower
  is better). Conditioned clips judge only the transitions into generated frames (``t >= given_frames``; the
  step from the last given frame into the first generated one counts). A frozen first frame keeps every
  object and scores 1: the motion guard (:mod:`eval.motion`) is what catches it.
* :class:`FeatureConsistency` — VBench ``subject_consistency`` (DINO ViT-B/16) and ``background_consistency``
  (CLIP ViT-B/32) formula: per frame feature ``f_t`` (L2-normalised),
  ``score = mean_{t>=1} (max(0, cos(f_{t-1}, f_t)) + max(0, cos(f_0, f_t))) / 2``. Runs only with a
  user-supplied TorchScript image encoder ``(N, 3, S, S) -> (N, D)``; frames are resized to ``S x S`` and
  normalised with the preset's mean/std. Range ``[0, 1]``, higher is better. There is no weight-free fallback
  for these two scores; ``object_persistence`` is the weight-free check of subject consistency on the
  synthetic world.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from eval.clip import EvalClip
from eval.memo import Memo, content_key, read_only
from eval.tracking import max_plausible_step, track_clip

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
AREA_TOLERANCE = 2.0
PRESETS = {  # mean, std of the published models' preprocessing
    "dino": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


_FLOWS = Memo(maxsize=256)  # a clip's forward and backward flows (dynamic degree, warping error, sync)


def farneback_flow(frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
    """Dense optical flow ``(H, W, 2)`` (pixels, x then y) from RGB uint8 ``frame_a`` to ``frame_b``;
    read-only, memoised by content (:mod:`eval.memo`: three metrics ask for the same frames' flow)."""

    def flow() -> np.ndarray:
        ga, gb = cv2.cvtColor(frame_a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(frame_b, cv2.COLOR_RGB2GRAY)
        return read_only(cv2.calcOpticalFlowFarneback(ga, gb, None, **FARNEBACK))

    return _FLOWS.get(content_key(frame_a, frame_b), flow)


def temporal_flickering(video: np.ndarray) -> float:
    """VBench temporal flickering ``(255 - mean |I_t - I_{t+1}|) / 255``, in ``[0, 1]``, higher is better."""
    if len(video) < 2:
        raise ValueError("temporal flickering needs at least 2 frames")
    v = video.astype(np.int16)
    mae = np.abs(np.diff(v, axis=0)).reshape(len(v) - 1, -1).mean(axis=1)  # (T-1,)
    return float((255.0 - mae.mean()) / 255.0)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``x + flow(x)`` (bilinear, border replicate)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def occlusion_mask(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Occluded pixels ``(H, W)`` bool from forward/backward flows (Lai et al. 2018 / UnFlow thresholds)."""
    bw_w = _warp(bw, fw)
    sq = lambda f: (f**2).sum(axis=-1)
    inconsistent = sq(fw + bw_w) > 0.01 * (sq(fw) + sq(bw_w)) + 0.5
    return inconsistent | motion_boundary(fw)


def motion_boundary(flow: np.ndarray) -> np.ndarray:
    """Lai et al.'s motion boundaries ``(H, W)`` bool: forward differences of the flow (``f[i] - f[i+1]``
    along x and along y, 0 on the last column/row, as ``compute_flow_gradients``), squared and summed over
    both flow components and both axes, above ``0.01 |F|^2 + 0.002``."""
    grad = np.zeros(flow.shape[:2])
    for c in range(2):
        grad[:, :-1] += (flow[:, :-1, c] - flow[:, 1:, c]) ** 2
        grad[:-1, :] += (flow[:-1, :, c] - flow[1:, :, c]) ** 2
    return grad > 0.01 * (flow**2).sum(axis=-1) + 0.002


def warping_error(video: np.ndarray) -> float:
    """Mean flow-warping error (see module docstring) of a uint8 video, ``[0, 1]``, lower is better."""
    if len(video) < 2:
        raise ValueError("warping error needs at least 2 frames")
    errors = []
    for a, b in zip(video[:-1], video[1:], strict=True):
        fw, bw = farneback_flow(a, b), farneback_flow(b, a)
        valid = ~occlusion_mask(fw, bw)
        warped = _warp(b.astype(np.float32) / 255.0, fw)
        sq_err = ((warped - a.astype(np.float32) / 255.0) ** 2).mean(axis=-1)  # (H, W), mean over RGB
        errors.append(sq_err[valid].mean() if valid.any() else sq_err.mean())
    return float(np.mean(errors))


def object_persistence(clip: EvalClip) -> dict[str, float]:
    """Object persistence of a synthetic-world clip (see module docstring).

    Returns ``{"persistence": [0, 1] higher better, "persistence_breaks": >= 0 lower better,
    "object_count_error": mean |#objects(t) - #expected|, >= 0 lower better}``.
    """
    tracks = track_clip(clip, include_unexpected=True)
    expected = [tr for tr in tracks.values() if tr.expected]
    judged = np.arange(clip.num_frames) >= max(clip.given_frames, 1)  # transitions t-1 -> t judged
    if not judged.any():
        raise ValueError("persistence needs at least one generated frame after the first")
    count = np.zeros(clip.num_frames)
    for tr in tracks.values():
        count += tr.visible
    if not expected:
        return {
            "persistence": 0.0,
            "persistence_breaks": float(judged.sum()),
            "object_count_error": float(count[clip.given_frames :].mean()),
        }
    step = max_plausible_step(clip)
    ok = np.ones(clip.num_frames, dtype=bool)  # ok[t]: transition t-1 -> t is fine (ok[0] unused)
    for tr in expected:
        area_ref = np.median(tr.area[tr.visible]) if tr.visible.any() else 0.0
        sized = tr.visible & (tr.area >= area_ref / AREA_TOLERANCE) & (tr.area <= area_ref * AREA_TOLERANCE)
        jump = np.hypot(np.diff(tr.x), np.diff(tr.y))  # NaN where either frame lacks the object
        ok[1:] &= sized[1:] & sized[:-1] & (np.nan_to_num(jump, nan=np.inf) <= step)
    for tr in tracks.values():
        if not tr.expected:
            ok[1:] &= ~tr.visible[1:]
    breaks = int((~ok[judged]).sum())
    return {
        "persistence": 1.0 - breaks / int(judged.sum()),
        "persistence_breaks": float(breaks),
        "object_count_error": float(np.abs(count - len(expected))[clip.given_frames :].mean()),
    }


def temporal_metrics(clip: EvalClip) -> dict[str, float]:
    """Weight-free temporal scores of any clip: ``temporal_flickering`` ([0, 1], higher better) and
    ``warping_error`` ([0, 1], lower better)."""
    return {
        "temporal_flickering": temporal_flickering(clip.video),
        "warping_error": warping_error(clip.video),
    }


class FeatureConsistency:
    """VBench subject/background consistency with a TorchScript image encoder (see module docstring).

    Args:
        weights_path: TorchScript file mapping normalised float ``(N, 3, size, size)`` to ``(N, D)`` features.
        preset: ``"dino"`` (subject consistency, ImageNet mean/std) or ``"clip"`` (background consistency).
        size: input resolution of the encoder (224 for the published models).
        device, batch_size: where and how many frames at a time the encoder runs.
    """

    def __init__(
        self,
        weights_path: str,
        *,
        preset: str = "dino",
        size: int = 224,
        device: str = "cpu",
        batch_size: int = 16,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        self.model = torch.jit.load(str(weights_path), map_location=device).eval()
        mean, std = PRESETS[preset]
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.name = "subject_consistency" if preset == "dino" else "background_consistency"
        self.size, self.device, self.batch_size = size, device, batch_size

    @torch.no_grad()
    def features(self, video: np.ndarray) -> torch.Tensor:
        """L2-normalised per-frame features ``(T, D)`` of a uint8 ``(T, H, W, 3)`` video."""
        out = []
        for s in range(0, len(video), self.batch_size):
            x = (
                torch.from_numpy(np.ascontiguousarray(video[s : s + self.batch_size]))
                .float()
                .permute(0, 3, 1, 2)
            )
            x = F.interpolate(x / 255.0, size=(self.size, self.size), mode="bilinear", align_corners=False)
            x = ((x - self.mean) / self.std).to(self.device)
            out.append(self.model(x).reshape(len(x), -1).float().cpu())
        return F.normalize(torch.cat(out), dim=1)

    def __call__(self, clip: EvalClip) -> dict[str, float]:
        """``{"subject_consistency" or "background_consistency": [0, 1], higher is better}``."""
        f = self.features(clip.video)
        if len(f) < 2:
            raise ValueError("feature consistency needs at least 2 frames")
        sim_prev = (f[1:] * f[:-1]).sum(dim=1).clamp_min(0)
        sim_first = (f[1:] * f[:1]).sum(dim=1).clamp_min(0)
        return {self.name: float(((sim_prev + sim_first) / 2).mean())}
