"""Reconstruction metrics against a reference: PSNR, SSIM, LPIPS (optional weights) and audio log-mel L1.

Below both training (the VAE modules' validation) and evaluation (:mod:`eval.recon` scores clips with them):
one implementation, imported from here by both.

* PSNR: ``10 log10(255^2 / MSE)`` per frame over all pixels and channels, averaged over frames. Identical
  frames would give ``inf``; each frame is capped at :data:`PSNR_CAP_DB`. Range ``[0, 100]`` dB, higher is
  better.
* SSIM (Wang et al. 2004), our implementation of scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
  channel_axis=-1)``: 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, the
  SSIM map is averaged over the valid region (skimage crops 5 pixels from each border, i.e. a 'valid'
  convolution), then over channels and frames. A test checks it against scikit-image. Range ``[-1, 1]``,
  higher is better.
* LPIPS (Zhang et al. 2018) only when a TorchScript file is given: ``model(x, y)`` with ``x, y`` float
  ``(N, 3, H, W)`` in ``[-1, 1]`` returning ``N`` distances (any shape with N elements). Range ``[0, ~1]``,
  lower is better. Without weights LPIPS is not reported (there is no weight-free fallback that means the same
  thing).
* Log-mel L1: mean ``|log max(mel_a, 1e-5) - log max(mel_b, 1e-5)|`` over bands and frames, with the front end
  of ``sora.models.audio_vae`` (torchaudio ``MelSpectrogram``, 16 kHz, n_fft 1024, hop 160, 64 mel bands over
  0-8 kHz, magnitude i.e. power 1, floor 1e-5), so it measures what the audio VAE is trained to reproduce.
  Range ``[0, inf)``, lower is better; the AAC round trip of a synthetic clip gives ~0.2, a 200 ms shift ~2.5.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage

PSNR_CAP_DB = 100.0
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WIN = 0.01, 0.03, 1.5, 11
MEL_SAMPLE_RATE, MEL_N_FFT, MEL_HOP, MEL_BANDS, MEL_FLOOR = 16000, 1024, 160, 64, 1e-5


def _frames_pair(video: np.ndarray, reference: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Two uint8 ``(T, H, W, 3)`` videos -> float64 ``(T, 3, H, W)`` tensors cut to the shorter length."""
    if video.shape[1:] != reference.shape[1:]:
        raise ValueError(f"video {video.shape} and reference {reference.shape} differ in frame size")
    n = min(len(video), len(reference))
    to = lambda v: torch.from_numpy(np.ascontiguousarray(v[:n])).double().permute(0, 3, 1, 2)
    return to(video), to(reference)


def psnr(video: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> float:
    """Mean per-frame PSNR in dB between two uint8 ``(T, H, W, 3)`` videos (capped at 100 dB), higher is
    better."""
    a, b = _frames_pair(video, reference)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)  # (T,)
    db = 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-30))
    return float(db.clamp(max=PSNR_CAP_DB).mean())


@lru_cache(maxsize=4)
def _gaussian_taps(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1D Gaussian ``(size,)``; the 2D window is its outer product (separable filtering)."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(x: np.ndarray) -> np.ndarray:
    """Gaussian-window mean over the last two axes, keeping only windows fully inside the image."""
    taps, pad = _gaussian_taps(), SSIM_WIN // 2
    x = ndimage.correlate1d(x, taps, axis=-2)
    x = ndimage.correlate1d(x, taps, axis=-1)
    return x[..., pad:-pad, pad:-pad]


def ssim_frames(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-image SSIM ``(N,)`` of float64 ``(N, C, H, W)`` arrays (mean over the valid region, then
    channels)."""
    h, w = a.shape[-2:]
    if min(h, w) < SSIM_WIN:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WIN}x{SSIM_WIN}, got {h}x{w}")
    mu_a, mu_b = _blur_valid(a), _blur_valid(b)
    var_a = _blur_valid(a * a) - mu_a**2
    var_b = _blur_valid(b * b) - mu_b**2
    cov = _blur_valid(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(axis=(2, 3)).mean(axis=1)


def ssim(video: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> float:
    """Mean per-frame SSIM between two uint8 ``(T, H, W, 3)`` videos, in ``[-1, 1]``, higher is better."""
    a, b = _frames_pair(video, reference)
    return float(ssim_frames(a.numpy(), b.numpy(), data_range).mean())


class LPIPS:
    """LPIPS from a user-supplied TorchScript file (contract in the module docstring); frames are batched."""

    def __init__(self, weights_path: str, *, device: str = "cpu", batch_size: int = 16) -> None:
        self.model = torch.jit.load(str(weights_path), map_location=device).eval()
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, video: np.ndarray, reference: np.ndarray) -> float:
        """Mean per-frame LPIPS distance between two uint8 videos, lower is better."""
        a, b = _frames_pair(video, reference)
        dists = []
        for s in range(0, len(a), self.batch_size):
            x = (a[s : s + self.batch_size].float() / 127.5 - 1).to(self.device)
            y = (b[s : s + self.batch_size].float() / 127.5 - 1).to(self.device)
            dists.append(self.model(x, y).reshape(len(x), -1).mean(dim=1).float().cpu())
        return float(torch.cat(dists).mean())


@lru_cache(maxsize=1)
def _mel_transform():
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=MEL_SAMPLE_RATE,
        n_fft=MEL_N_FFT,
        hop_length=MEL_HOP,
        n_mels=MEL_BANDS,
        f_min=0.0,
        f_max=MEL_SAMPLE_RATE / 2,
        power=1.0,
    )


def log_mel(audio: np.ndarray | torch.Tensor, sample_rate: int = MEL_SAMPLE_RATE) -> torch.Tensor:
    """``(1, S)`` audio -> log-mel ``(64, frames)`` (the audio VAE's front end; resampled to 16 kHz first)."""
    from sora.media import resample_audio, to_mono

    x = resample_audio(to_mono(audio), int(sample_rate), MEL_SAMPLE_RATE)
    return torch.log(_mel_transform()(x)[0].clamp_min(MEL_FLOOR))


def log_mel_l1(
    audio: np.ndarray,
    reference: np.ndarray,
    sample_rate: int = MEL_SAMPLE_RATE,
    reference_rate: int | None = None,
) -> float:
    """Mean absolute log-mel difference (cut to the shorter clip), ``[0, inf)``, lower is better."""
    a, b = log_mel(audio, sample_rate), log_mel(reference, reference_rate or sample_rate)
    n = min(a.shape[1], b.shape[1])
    return float((a[:, :n] - b[:, :n]).abs().mean())
