"""DiagonalGaussian (the VAE posterior) and the latent statistics mixin."""

import pytest
import torch

from sora.models.distributions import LOGVAR_MAX, DiagonalGaussian, LatentStatsMixin


def test_kl_of_standard_normal_is_zero():
    post = DiagonalGaussian(torch.zeros(3, 4, 2, 5), torch.zeros(3, 4, 2, 5))
    kl = post.kl()
    assert kl.shape == (3,)
    assert torch.allclose(kl, torch.zeros(3), atol=1e-7)


def test_kl_matches_closed_form_and_reductions():
    mean, logvar = torch.full((2, 3, 4), 0.5), torch.full((2, 3, 4), -1.0)
    post = DiagonalGaussian(mean, logvar)
    elem = 0.5 * (0.25 + torch.exp(torch.tensor(-1.0)) - 1.0 + 1.0)
    assert torch.allclose(post.kl(), torch.full((2,), float(elem) * 12), atol=1e-6)
    assert torch.allclose(post.kl(reduction="mean"), torch.full((2,), float(elem)), atol=1e-6)
    assert torch.allclose(post.kl(post), torch.zeros(2), atol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        post.kl(reduction="max")


def test_logvar_is_clamped_and_std_finite():
    post = DiagonalGaussian(torch.zeros(1, 2), torch.tensor([[1e4, -1e4]]))
    assert float(post.logvar.max()) == LOGVAR_MAX
    assert torch.isfinite(post.std).all() and (post.std > 0).all()
    assert torch.isfinite(post.kl()).all()


def test_sample_is_reproducible_with_generator_and_has_right_moments():
    post = DiagonalGaussian(torch.full((4, 8, 64), 2.0), torch.full((4, 8, 64), 2 * torch.tensor(0.5).log()))
    a = post.sample(torch.Generator().manual_seed(7))
    b = post.sample(torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, post.sample(torch.Generator().manual_seed(8)))
    assert abs(float(a.mean()) - 2.0) < 0.05 and abs(float(a.std()) - 0.5) < 0.05
    assert torch.equal(post.mode(), post.mean)


def test_from_moments_cat_and_shape_errors():
    moments = torch.randn(2, 6, 3)
    post = DiagonalGaussian.from_moments(moments)
    assert post.shape == (2, 3, 3)
    joined = DiagonalGaussian.cat([post, post], dim=2)
    assert joined.shape == (2, 3, 6)
    with pytest.raises(ValueError, match="even"):
        DiagonalGaussian.from_moments(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="same shape"):
        DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))


class _Latents(LatentStatsMixin):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self._init_latent_stats(channels)


def test_latent_stats_round_trip_and_validation():
    m = _Latents(4)
    z = torch.randn(2, 4, 3, 5)
    assert torch.equal(m.normalize_latents(z), z)  # identity by default
    m.set_latent_stats(torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.5, 2.0, 1.0, 4.0]))
    assert torch.allclose(m.denormalize_latents(m.normalize_latents(z)), z, atol=1e-6)
    assert {"latent_mean", "latent_std"} <= set(m.state_dict())
    with pytest.raises(ValueError, match=r"\(4,\)"):
        m.set_latent_stats(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        m.set_latent_stats(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="latents must be"):
        m.normalize_latents(torch.zeros(2, 5, 3))
