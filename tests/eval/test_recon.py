"""eval.recon: PSNR/SSIM against scikit-image and closed forms, LPIPS with TorchScript weights, log-mel L1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from eval import MissingInput
from eval.broken import audio_shifted, flickering, mirrored, shuffled
from eval.clip import EvalClip
from eval.recon import LPIPS, PSNR_CAP_DB, log_mel_l1, psnr, recon_metrics, ssim
from sora.media import tensor_to_video, video_to_tensor


def _noisy(video: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, video.shape)
    return np.clip(video + noise, 0, 255).round().astype(np.uint8)


def test_clips_accept_model_tensors_exactly(world):
    clip = world["throw_0"]
    x = video_to_tensor(clip.video)  # (3, T, H, W) in [-1, 1], the DESIGN.md layout
    assert np.array_equal(EvalClip(x, clip.fps).video, clip.video)
    assert np.array_equal(EvalClip(x, clip.fps).video, tensor_to_video(x))
    stereo = torch.from_numpy(np.concatenate([clip.audio, clip.audio]))[None]  # (1, 2, S)
    assert np.allclose(EvalClip(x, clip.fps, audio=stereo).audio, clip.audio)


def test_ssim_matches_scikit_image(world, world_mp4):
    ref = world["collide_0"].video
    for other in (world_mp4["collide_0"].video, _noisy(ref, 20.0), mirrored(world["collide_0"]).video):
        expected = np.mean(
            [
                structural_similarity(
                    a,
                    b,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=255,
                    channel_axis=-1,
                )
                for a, b in zip(other, ref)
            ]
        )
        assert ssim(other, ref) == pytest.approx(expected, abs=1e-9)


def test_psnr_matches_the_closed_form(world):
    ref = world["fall_0"].video
    other = _noisy(ref, 5.0)
    expected = np.mean([peak_signal_noise_ratio(b, a, data_range=255) for a, b in zip(other, ref)])
    assert psnr(other, ref) == pytest.approx(expected, abs=1e-9)
    assert psnr(ref, ref) == PSNR_CAP_DB and ssim(ref, ref) == pytest.approx(1.0)


def test_reconstruction_scores_separate_compression_from_damage(world, world_mp4):
    for key in ("fall_0", "slide_0", "collide_1"):
        ref = world[key]
        good = recon_metrics(dataclasses.replace(world_mp4[key], reference=ref))
        assert good["psnr"] > 30 and good["ssim"] > 0.9 and good["mel_l1"] < 0.5, key
        for breaker in (mirrored, flickering, shuffled):
            bad = recon_metrics(dataclasses.replace(breaker(ref), reference=ref))
            assert bad["psnr"] < good["psnr"] - 5, (key, breaker.__name__)
            # SSIM discounts global brightness by design, so flicker is PSNR's to catch, not SSIM's
            if breaker is not flickering:
                assert bad["ssim"] < good["ssim"] - 0.02, (key, breaker.__name__)
    with pytest.raises(MissingInput, match="reference"):
        recon_metrics(world["fall_0"])


def test_log_mel_l1_catches_shifted_sound(world, world_mp4):
    for key in ("fall_0", "collide_1"):
        ref = world[key]
        aac = log_mel_l1(world_mp4[key].audio, ref.audio)
        assert log_mel_l1(ref.audio, ref.audio) == 0.0
        assert log_mel_l1(audio_shifted(ref).audio, ref.audio) > 5 * aac, key


class _PixelDistance(nn.Module):
    """A stand-in for LPIPS weights: mean absolute difference of 2x2-pooled images, one value per pair."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pool = nn.functional.avg_pool2d
        return (pool(x, 2) - pool(y, 2)).abs().mean(dim=(1, 2, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is the weights format
def test_lpips_runs_from_a_torchscript_file(tmp_path, world, world_mp4):
    path = tmp_path / "lpips.pt"
    torch.jit.script(_PixelDistance()).save(str(path))
    lpips = LPIPS(str(path), batch_size=7)
    ref = world["fall_0"]
    assert lpips(ref.video, ref.video) == 0.0
    expected = np.abs(mirrored(ref).video.astype(np.float64) - ref.video).mean() / 127.5
    assert lpips(mirrored(ref).video, ref.video) == pytest.approx(expected, rel=0.2)
    result = recon_metrics(dataclasses.replace(world_mp4["fall_0"], reference=ref), lpips=lpips)
    assert 0 < result["lpips"] < lpips(mirrored(ref).video, ref.video)
