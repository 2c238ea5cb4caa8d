"""Reconstruction scores of a clip against its reference (VAE round trips, any pixel-exact target).

The metrics themselves (PSNR, SSIM, LPIPS, log-mel L1; definitions and ranges) live in :mod:`sora.metrics`,
below both training and evaluation; they are re-exported here for the eval suite's callers.
"""

from __future__ import annotations

from eval.clip import EvalClip
from sora.metrics import (
    LPIPS,
    MEL_BANDS,
    MEL_FLOOR,
    MEL_HOP,
    MEL_N_FFT,
    MEL_SAMPLE_RATE,
    PSNR_CAP_DB,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WIN,
    log_mel,
    log_mel_l1,
    psnr,
    ssim,
    ssim_frames,
)

__all__ = [
    "LPIPS",
    "MEL_BANDS",
    "MEL_FLOOR",
    "MEL_HOP",
    "MEL_N_FFT",
    "MEL_SAMPLE_RATE",
    "PSNR_CAP_DB",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WIN",
    "log_mel",
    "log_mel_l1",
    "psnr",
    "recon_metrics",
    "ssim",
    "ssim_frames",
]


def recon_metrics(clip: EvalClip, lpips: LPIPS | None = None) -> dict[str, float]:
    """PSNR, SSIM (and LPIPS with weights) of ``clip`` vs ``clip.reference``; log-mel L1 when both have audio.

    Returns ``{"psnr": dB [0, 100] higher better, "ssim": [-1, 1] higher better, "lpips": [0, ~1] lower better
    (only with weights), "mel_l1": [0, inf) lower better (only with audio on both sides)}``.
    """
    ref = clip.require_reference("recon")
    out = {"psnr": psnr(clip.video, ref.video), "ssim": ssim(clip.video, ref.video)}
    if lpips is not None:
        out["lpips"] = lpips(clip.video, ref.video)
    if clip.audio is not None and ref.audio is not None:
        out["mel_l1"] = log_mel_l1(clip.audio, ref.audio, clip.sample_rate, ref.sample_rate)
    return out
