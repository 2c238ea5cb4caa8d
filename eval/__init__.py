"""Evaluation metrics for generated video+audio clips, each following a named published protocol.

Per-clip metrics share one signature, ``metric(clip: EvalClip) -> dict[str, float]``, and are registered in
:data:`METRICS`; a runner calls every entry on every clip. A metric that needs an input the clip lacks raises
:class:`MissingInput` (skip, count and report it). Set-level metrics (Fréchet distances) take two lists of
clips and live in :data:`DISTRIBUTION_METRICS`. Metrics that need weights (LPIPS, DINO/CLIP consistency, FVD)
are built by the runner from user-given TorchScript paths (:class:`eval.recon.LPIPS`,
:class:`eval.temporal.FeatureConsistency`, :class:`eval.frechet.I3DFeatures`) and are not in the default
registries, because nothing is downloaded.

| name | module | needs | keys (range, which way is better) |
|---|---|---|---|
| ``physics_gt`` | physics | meta | ``pos_err_px``, ``vel_err_px_s``, ... (>= 0, lower) |
| ``physics_laws`` | physics | - | ``gravity_fit`` (0/1, higher), ``teleports`` (lower), ... |
| ``physics_iq`` | physics | reference | ``*_iou`` ([0, 1], higher), ``mse`` ([0, 1], lower) |
| ``spatial`` | spatial | prompt | ``spatial_score``, ``spatial_correct`` ([0, 1], higher) |
| ``temporal`` | temporal | - | ``temporal_flickering`` ([0, 1], higher), ``warping_error`` (lower) |
| ``persistence`` | temporal | - | ``persistence`` ([0, 1], higher), ``persistence_breaks`` (lower) |
| ``av_align`` | av_sync | audio | ``av_align`` ([0, 1], higher) |
| ``onset_sync`` | av_sync | audio, meta | ``onset_f1`` ([0, 1], higher), ``onset_offset_s`` (0 best) |
| ``recon`` | recon | reference | ``psnr`` (dB, higher), ``ssim`` ([-1, 1], higher), ``mel_l1`` (lower) |

Each module's docstring names its protocol, every key's range, and where it departs from the published one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eval.av_sync import av_align, onset_sync
from eval.clip import EvalClip, MissingInput, as_uint8_video
from eval.frechet import frechet_trajectory_distance
from eval.physics import physics_gt, physics_iq, physics_laws
from eval.recon import recon_metrics
from eval.spatial import spatial_adherence
from eval.temporal import object_persistence, temporal_metrics

Metric = Callable[[EvalClip], dict[str, float]]
DistributionMetric = Callable[[Sequence[EvalClip], Sequence[EvalClip]], dict[str, float]]

METRICS: dict[str, Metric] = {
    "physics_gt": physics_gt,
    "physics_laws": physics_laws,
    "physics_iq": physics_iq,
    "spatial": spatial_adherence,
    "temporal": temporal_metrics,
    "persistence": object_persistence,
    "av_align": av_align,
    "onset_sync": onset_sync,
    "recon": recon_metrics,
}
"""Per-clip metrics, all called as ``metric(clip)``."""

DISTRIBUTION_METRICS: dict[str, DistributionMetric] = {
    "ftd": frechet_trajectory_distance,
}
"""Set-level metrics, called as ``metric(generated_clips, reference_clips)``."""

__all__ = ["DISTRIBUTION_METRICS", "METRICS", "EvalClip", "MissingInput", "as_uint8_video"]
