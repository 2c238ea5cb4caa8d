"""Distribution metrics: the Fréchet distance between Gaussians, FVD, and the weight-free Fréchet Trajectory
Distance.

All three compare two *sets* of clips (generated vs reference), so they live in
:data:`eval.DISTRIBUTION_METRICS` with the signature
``metric(generated: list[EvalClip], reference: list[EvalClip]) -> dict[str, float]``, not in the per-clip one.

* :func:`frechet_distance` is the FID formula (Heusel et al. 2017),
  ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. Covariances are the unbiased sample covariances
  (``np.cov``), as in pytorch-fid. The trace of the matrix square root is computed from the eigenvalues of the
  symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``), which stays real and needs no
  ``eps`` retry; a test checks it against the ``scipy.linalg.sqrtm`` formula of pytorch-fid's
  ``calculate_frechet_distance``. Range ``[0, inf)``, lower is better, 0 for identical statistics.
* :class:`I3DFeatures` / :func:`fvd`: Fréchet Video Distance (Unterthiner et al. 2018) with a user-supplied
  I3D TorchScript file (nothing is downloaded). The model is called as ``model(x, **call_kwargs)`` with ``x``
  float ``(N, 3, 16, 224, 224)`` in ``[-1, 1]`` and must return ``(N, D)`` features (D = 400 Kinetics logits
  in the original). StyleGAN-V's ``i3d_torchscript.pt`` takes flags for its own rescaling, resizing and
  feature output: pass ``call_kwargs=dict(rescale=False, resize=False, return_features=True)``. Clips are cut
  to their first 16 frames (the last one repeated if shorter; StyleGAN-V's protocol) and resized bilinearly to
  224x224. Published FVDs use 2048 clips per side; with fewer clips the number is biased upwards and only
  comparable between runs of the same size.
* :func:`frechet_trajectory_distance` (FTD, ours, weight-free, synthetic world only): the Fréchet distance
  between the Gaussians of per-object trajectory statistics measured by the colour tracker
  (:data:`TRAJECTORY_FEATURES`), so a model whose objects fall upwards, teleport or never bounce is far from
  the ground-truth world even when every frame looks right. Each tracked object is one sample. Features are
  centred on the reference mean and divided by ``max(reference std, MIN_SCALE)`` (:data:`MIN_SCALE` = 0.1):
  the floor matters for features that are constant in the reference, above all ``visible`` (1 for every
  true object), which the former ``std + 1e-3`` turned into a visibility count times 1000 that swamped every
  other feature (FTDs of 1e5); a test checks a hand-computed value. Range ``[0, inf)``, lower is better.
* :func:`audio_frechet_distance` (``audio_fd``, ours, weight-free; a FAD without VGGish): every 10 ms frame of
  every clip's log-mel spectrogram (64 mel bands, dB with a -100 dB floor, :func:`log_mel_frames`) is one
  sample; the distance is between the Gaussians of the generated and the reference frames, in dB^2. It sees
  level (quiet or silenced sound), spectrum (a wrong timbre) and the share of silence, not timing (a shifted
  track has the same frames). Range ``[0, inf)``, lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from eval.clip import EvalClip
from eval.tracking import Track, track_clip

TRAJECTORY_FEATURES = (
    "mean_speed",  # mean |v| over the track, in frame heights per second
    "max_speed",  # max |v|, frame heights per second
    "vertical_accel",  # median of the vertical acceleration (down positive), frame heights per s^2
    "horizontal_accel",  # median |horizontal acceleration|, frame heights per s^2
    "bounces",  # number of down->up reversals of vertical velocity
    "start_x",  # x of the first visible centroid / frame width
    "start_y",  # y of the first visible centroid / frame height
    "x_travel",  # (last x - first x) / frame width
    "y_range",  # (max y - min y) / frame height
    "visible",  # fraction of frames where the object is found
)
"""The per-object statistics behind the Fréchet Trajectory Distance, in this order (all unit-free or per frame
height, so the distance does not depend on the resolution)."""
MIN_SCALE = 0.1
"""Floor of the per-feature scale the FTD divides by (features are fractions of the frame, frame heights per
second or counts, so 0.1 is a small but real difference in each)."""


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``features`` ``(N, D)`` (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {features.shape}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) positive semi-definite matrix via ``eigh``."""
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (the FID formula); >= 0, lower is
    better."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1  # symmetric PSD with the eigenvalues of sigma1 @ sigma2
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean, 0.0))


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets ``(N_a, D)`` and ``(N_b, D)``."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


class I3DFeatures:
    """Clip-level features from a user-supplied I3D TorchScript file (see the module docstring for the
    contract)."""

    def __init__(
        self,
        weights_path: str,
        *,
        num_frames: int = 16,
        size: int = 224,
        call_kwargs: dict | None = None,
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        self.model = torch.jit.load(str(weights_path), map_location=device).eval()
        self.num_frames, self.size, self.device, self.batch_size = num_frames, size, device, batch_size
        self.call_kwargs = dict(call_kwargs or {})

    def preprocess(self, video: np.ndarray) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> float ``(3, num_frames, size, size)`` in ``[-1, 1]`` (first frames; last
        repeated)."""
        idx = np.minimum(np.arange(self.num_frames), video.shape[0] - 1)
        x = torch.from_numpy(np.ascontiguousarray(video[idx])).float().permute(0, 3, 1, 2)  # (T, 3, H, W)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()  # (3, T, size, size)

    @torch.no_grad()
    def __call__(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        """Features ``(N, D)`` for ``N`` uint8 videos."""
        feats = []
        for start in range(0, len(videos), self.batch_size):
            x = torch.stack([self.preprocess(v) for v in videos[start : start + self.batch_size]]).to(
                self.device
            )
            feats.append(self.model(x, **self.call_kwargs).reshape(x.shape[0], -1).float().cpu())
        return torch.cat(feats).numpy()


def fvd(
    generated: Sequence[EvalClip], reference: Sequence[EvalClip], extractor: I3DFeatures
) -> dict[str, float]:
    """Fréchet Video Distance between two clip sets; ``{"fvd": [0, inf), lower is better}``."""
    feats_g = extractor([c.video for c in generated])
    feats_r = extractor([c.video for c in reference])
    return {"fvd": frechet_distance_from_features(feats_g, feats_r)}


def _track_features(track: Track, fps: float, width: int, height: int) -> np.ndarray | None:
    """The :data:`TRAJECTORY_FEATURES` row of one track (``None`` if the object is seen in < 3 frames)."""
    seen = track.visible
    if seen.sum() < 3:
        return None
    t = np.flatnonzero(seen)
    x, y = track.x[seen] / height, track.y[seen] / height
    dt = np.diff(t) / fps
    vx, vy = np.diff(x) / dt, np.diff(y) / dt
    speed = np.hypot(vx, vy)
    tv = (t[1:] + t[:-1]) / 2 / fps
    ax = np.diff(vx) / np.diff(tv) if len(vx) > 1 else np.zeros(1)
    ay = np.diff(vy) / np.diff(tv) if len(vy) > 1 else np.zeros(1)
    moving = np.abs(vy) > 0.05  # frame heights per second; ignore jitter of objects at rest
    signs = np.sign(vy[moving])
    bounces = int(np.sum((signs[:-1] > 0) & (signs[1:] < 0)))
    return np.array(
        [
            speed.mean(),
            speed.max(),
            np.median(ay),
            np.median(np.abs(ax)),
            bounces,
            track.x[seen][0] / width,
            track.y[seen][0] / height,
            (track.x[seen][-1] - track.x[seen][0]) / width,
            (track.y[seen].max() - track.y[seen].min()) / height,
            seen.mean(),
        ]
    )


def trajectory_features(clip: EvalClip) -> np.ndarray:
    """Per-object trajectory statistics ``(num_objects, len(TRAJECTORY_FEATURES))`` from the tracker."""
    tracks = track_clip(clip)
    _, height, width, _ = clip.video.shape
    rows = [
        r for r in (_track_features(tr, clip.fps, width, height) for tr in tracks.values()) if r is not None
    ]
    return np.stack(rows) if rows else np.zeros((0, len(TRAJECTORY_FEATURES)))


def standardised_frechet(
    feats_g: np.ndarray, feats_r: np.ndarray, *, min_scale: float = MIN_SCALE, ridge: float = 1e-6
) -> float:
    """Fréchet distance after dividing every feature by ``max(reference std, min_scale)`` (population std)
    and centring on the reference mean; ``ridge * I`` is added to both covariances (small sets give
    rank-deficient estimates)."""
    mean = feats_r.mean(axis=0)
    scale = np.maximum(feats_r.std(axis=0), min_scale)
    mu_g, sigma_g = gaussian_stats((feats_g - mean) / scale)
    mu_r, sigma_r = gaussian_stats((feats_r - mean) / scale)
    eye = ridge * np.eye(len(mean))
    return frechet_distance(mu_g, sigma_g + eye, mu_r, sigma_r + eye)


def frechet_trajectory_distance(
    generated: Sequence[EvalClip], reference: Sequence[EvalClip], *, ridge: float = 1e-6
) -> dict[str, float]:
    """Fréchet Trajectory Distance between two sets of synthetic-world clips (see module docstring).

    Features are standardised by :func:`standardised_frechet` (reference mean and std, the std floored at
    :data:`MIN_SCALE`). Returns ``{"ftd": [0, inf), lower is better, "ftd_objects_generated": n,
    "ftd_objects_reference": n}``.
    """
    feats_g = np.concatenate([trajectory_features(c) for c in generated])
    feats_r = np.concatenate([trajectory_features(c) for c in reference])
    if len(feats_g) < 2 or len(feats_r) < 2:
        raise ValueError(f"FTD needs >= 2 tracked objects per set, got {len(feats_g)} and {len(feats_r)}")
    return {
        "ftd": standardised_frechet(feats_g, feats_r, ridge=ridge),
        "ftd_objects_generated": float(len(feats_g)),
        "ftd_objects_reference": float(len(feats_r)),
    }


def log_mel_frames(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel frames ``(frames, ONSET_MELS)`` in dB (power floored at ``1e-10``, i.e. -100 dB): 64 mel
    bands of 512-sample windows every 10 ms at 16 kHz, the onset detector's spectrogram."""
    from eval.av_sync import _onset_mel
    from sora.media import resample_audio, to_mono

    x = resample_audio(to_mono(audio), int(sample_rate), 16000)
    mel = _onset_mel()(x)[0]  # (mels, frames)
    return (10.0 * torch.log10(mel.clamp_min(1e-10))).T.double().numpy()


def audio_frechet_distance(generated: Sequence[EvalClip], reference: Sequence[EvalClip]) -> dict[str, float]:
    """Audio Fréchet distance on log-mel statistics (see module docstring): ``{"audio_fd": [0, inf) dB^2,
    lower is better, "audio_fd_clips_generated": n, "audio_fd_clips_reference": n, "audio_fd_skipped": n}``.
    Clips without sound are skipped and counted."""
    frames_g = [log_mel_frames(c.audio, c.sample_rate) for c in generated if c.audio is not None]
    frames_r = [log_mel_frames(c.audio, c.sample_rate) for c in reference if c.audio is not None]
    if not frames_g or not frames_r:
        raise ValueError(
            f"audio_fd needs clips with sound on both sides, got {len(frames_g)} and {len(frames_r)}"
        )
    return {
        "audio_fd": frechet_distance_from_features(np.concatenate(frames_g), np.concatenate(frames_r)),
        "audio_fd_clips_generated": float(len(frames_g)),
        "audio_fd_clips_reference": float(len(frames_r)),
        "audio_fd_skipped": float(len(generated) + len(reference) - len(frames_g) - len(frames_r)),
    }
