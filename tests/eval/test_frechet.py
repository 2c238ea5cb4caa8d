"""eval.frechet: the Fréchet distance against pytorch-fid's formula, FVD from TorchScript, and the trajectory
FTD."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from eval.broken import audio_silenced, from_synthetic, gravity_reversed, shuffled, vanished
from eval.frechet import (
    MIN_SCALE,
    TRAJECTORY_FEATURES,
    I3DFeatures,
    audio_frechet_distance,
    frechet_distance,
    frechet_trajectory_distance,
    fvd,
    gaussian_stats,
    standardised_frechet,
    trajectory_features,
)


def _reference_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` (scipy ``sqrtm`` of the product, eps retry, real part)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@pytest.mark.parametrize(("dim", "n"), [(4, 50), (32, 200), (64, 40)])  # the last is rank deficient
def test_frechet_distance_matches_the_pytorch_fid_formula(dim, n):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    b = 0.5 + rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    stats_a, stats_b = gaussian_stats(a), gaussian_stats(b)
    ours = frechet_distance(*stats_a, *stats_b)
    assert ours == pytest.approx(_reference_frechet(*stats_a, *stats_b), rel=1e-6, abs=1e-6)
    assert frechet_distance(*stats_a, *stats_a) == pytest.approx(0.0, abs=1e-6 * np.trace(stats_a[1]))


def test_frechet_distance_closed_form_in_one_dimension():
    # (mu1 - mu2)^2 + (s1 - s2)^2 for N(mu, s^2)
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])
    ) == pytest.approx(4.0 + 1.0)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


class _TinyI3D(nn.Module):
    """Stands in for an I3D TorchScript file: checks the input contract, returns pooled 3D-conv features (or
    their softmax, like I3D's logits vs probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.dim() == 5 and x.shape[1] == 3 and x.shape[2] == 16
        assert bool(x.min() >= -1.0) and bool(x.max() <= 1.0)
        feats = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
        return feats if return_features else feats.softmax(dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is the weights format
def test_fvd_from_a_torchscript_file(tmp_path, world, world_mp4):
    torch.manual_seed(0)
    path = tmp_path / "i3d.pt"
    torch.jit.script(_TinyI3D()).save(str(path))
    extractor = I3DFeatures(str(path), size=32, call_kwargs={"return_features": True}, batch_size=4)
    clips = list(world.values())
    assert extractor([clips[0].video]).shape == (1, 8)
    same = fvd(list(world_mp4.values()), clips, extractor)["fvd"]
    # untrained features cannot judge physics; a darker world is a distribution shift they do see
    darker = fvd([dataclasses.replace(c, video=c.video // 2) for c in clips], clips, extractor)["fvd"]
    assert same < 0.05 * darker


@pytest.fixture(scope="module")
def other_world() -> list:
    """Ground-truth clips with other seeds than the session's, as the 'generated' side."""
    from data_pipelines.synthetic import FAMILIES, WorldConfig, generate_clip

    return [
        from_synthetic(generate_clip(WorldConfig(), seed, family))
        for family in FAMILIES
        if family != "static"
        for seed in (10, 11, 12)
    ]


def test_trajectory_features_read_the_physics(world):
    feats = trajectory_features(world["fall_0"])
    assert feats.shape == (len(world["fall_0"].meta["objects"]), len(TRAJECTORY_FEATURES))
    col = dict(zip(TRAJECTORY_FEATURES, feats.T, strict=True))
    assert (col["bounces"] >= 1).all() and (col["visible"] == 1).all()
    assert np.isclose(col["vertical_accel"], world["fall_0"].meta["gravity_px_s2"] / 64, rtol=0.2).any()


def test_trajectory_distance_small_between_true_worlds_and_large_for_broken_physics(world_mp4, other_world):
    reference = [c for c in world_mp4.values() if c.meta["family"] != "static"]
    truth = frechet_trajectory_distance(other_world, reference)["ftd"]
    assert truth < 3.0  # standardised features: two samples of one world differ by sampling noise only (~2)
    for breaker in (gravity_reversed, shuffled):
        broken = frechet_trajectory_distance([breaker(c) for c in other_world], reference)["ftd"]
        assert broken > 3 * truth, breaker.__name__


def test_ftd_standardisation_on_a_hand_computed_case():
    # feature 0: reference [0, 2] (std 1); feature 1 ("visible"): reference [1, 1], std 0 -> scale MIN_SCALE
    reference = np.array([[0.0, 1.0], [2.0, 1.0]])
    generated = np.array([[0.0, 1.0], [2.0, 0.8]])
    # standardised: reference [[-1, 0], [1, 0]], generated [[-1, 0], [1, -2]]; mean difference (0, -1),
    # covariances diag(2, 0) and [[2, -2], [-2, 2]]; Tr sqrt(S_r^1/2 S_g S_r^1/2) = sqrt(4) = 2
    # FD = 1 + 2 + 4 - 2 * 2 = 3 (with std + 1e-3 the second feature alone gave ~1e4 + 8e4)
    assert MIN_SCALE == 0.1
    assert standardised_frechet(generated, reference, ridge=0.0) == pytest.approx(3.0, abs=1e-9)
    assert standardised_frechet(reference, reference, ridge=0.0) == pytest.approx(0.0, abs=1e-9)


def test_ftd_is_not_dominated_by_visibility(world_mp4, other_world):
    reference = [c for c in world_mp4.values() if c.meta["family"] != "static"]
    truth = frechet_trajectory_distance(other_world, reference)["ftd"]
    # one object of every clip seen in only half the frames: a real but bounded change, not 1e5
    half_seen = frechet_trajectory_distance([vanished(c) for c in other_world], reference)["ftd"]
    assert truth < half_seen < 100


def test_audio_fd_small_between_true_worlds_and_large_when_silenced(world_mp4, other_world):
    reference = list(world_mp4.values())
    truth = audio_frechet_distance(other_world, reference)
    assert truth["audio_fd_clips_generated"] == len(other_world) and truth["audio_fd_skipped"] == 0
    silenced = audio_frechet_distance([audio_silenced(c) for c in other_world], reference)["audio_fd"]
    quiet = [dataclasses.replace(c, audio=c.audio / 4) for c in other_world]
    assert silenced > 10 * truth["audio_fd"]
    assert audio_frechet_distance(quiet, reference)["audio_fd"] > 2 * truth["audio_fd"]
    mute = [dataclasses.replace(other_world[0], audio=None), *other_world[1:]]
    assert audio_frechet_distance(mute, reference)["audio_fd_skipped"] == 1
    with pytest.raises(ValueError, match="sound on both sides"):
        audio_frechet_distance([dataclasses.replace(c, audio=None) for c in other_world], reference)
