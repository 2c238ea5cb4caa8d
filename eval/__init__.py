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
| ``physics_gt`` | physics | meta | ``pos_err_px`` (>= 0, lower; missing: frame diagonal), ``vel_err_px_s`` |
| ``physics_laws`` | physics | - | ``gravity_fit``, ``no_teleport`` (0/1, higher), ``objects_missing`` |
| ``physics_iq`` | physics | reference | ``*_iou`` ([0, 1], higher), ``mse`` ([0, 1], lower) |
| ``spatial`` | spatial | prompt | ``left_right_accuracy``, ``vertical_accuracy`` (0/1, higher), ... |
| ``objects`` | objects | prompt or meta | ``detection_rate``, ``colour_accuracy`` ([0, 1], higher) |
| ``motion`` | motion | - | ``dynamic_degree`` (0/1, higher), ``motion_smoothness`` ([0, 1], higher) |
| ``temporal`` | temporal | - | ``temporal_flickering`` ([0, 1], higher), ``warping_error`` ([0, 1], lower) |
| ``persistence`` | temporal | - | ``persistence`` ([0, 1], higher), ``persistence_breaks`` (lower) |
| ``av_align`` | av_sync | audio | ``av_align`` ([0, 1], higher) |
| ``sync`` | av_sync | audio | ``sync_f1`` ([0, 1], higher), ``sync_lag_s`` (0 best) |
| ``onset_sync`` | av_sync | audio, meta | ``onset_f1`` ([0, 1], higher), ``onset_offset_s`` (0 best) |
| ``loudness`` | loudness | audio | ``loudness_db`` (dBFS), ``loudness_diff_db`` (vs reference, 0 best) |
| ``recon`` | recon | reference | ``psnr`` (dB, higher), ``ssim`` ([-1, 1], higher), ``mel_l1`` (lower) |

Distribution metrics: ``ftd`` (trajectory statistics) and ``audio_fd`` (log-mel frames), both ``[0, inf)``,
lower is better.

Contract with the suite: a key is a float for every clip where its quantity is defined; where an object is
missing or nothing measurable happens although it should, the metric returns its failure value (0 for a
rate, the documented failure distance for an error), never NaN; a key is absent only when the clip truly
has no such content (no horizontal relation in the prompt, a still scene for ``dynamic_degree`` and
``sync_f1``, no measurable bounce for ``restitution_ok``), so the suite's ``_n`` counts it. Conditioned
clips set :attr:`EvalClip.given_frames`; spatial, persistence, objects, motion and ``physics_gt`` judge
only the generated frames.

Each module's docstring names its protocol, every key's range, and where it departs from the published one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eval.av_sync import av_align, onset_sync, sync
from eval.clip import EvalClip, MissingInput, as_uint8_video
from eval.frechet import audio_frechet_distance, frechet_trajectory_distance
from eval.loudness import loudness
from eval.motion import motion_metrics
from eval.objects import object_presence
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
    "objects": object_presence,
    "motion": motion_metrics,
    "temporal": temporal_metrics,
    "persistence": object_persistence,
    "av_align": av_align,
    "sync": sync,
    "onset_sync": onset_sync,
    "loudness": loudness,
    "recon": recon_metrics,
}
"""Per-clip metrics, all called as ``metric(clip)``."""

DISTRIBUTION_METRICS: dict[str, DistributionMetric] = {
    "ftd": frechet_trajectory_distance,
    "audio_fd": audio_frechet_distance,
}
"""Set-level metrics, called as ``metric(generated_clips, reference_clips)``."""

__all__ = ["DISTRIBUTION_METRICS", "METRICS", "EvalClip", "MissingInput", "as_uint8_video"]
