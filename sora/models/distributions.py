"""The VAE posterior (a diagonal Gaussian) and the latent statistics shared by the video and audio VAEs.

`DiagonalGaussian.kl()` returns one number per sample: the KL divergence to a standard normal (or to
another diagonal Gaussian) **summed** over every non-batch dimension, shape `(B,)`. Pass
`reduction="mean"` for the per-element mean instead. Losses decide how to weight it (see
`sora.training.vae_loss`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# exp(-30) ~ 1e-13 and exp(20) ~ 5e8: wide enough never to bind for a healthy encoder, narrow enough that
# exp(logvar) cannot overflow to inf (or underflow to an exact 0 std) when a fresh encoder emits wild values.
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


class DiagonalGaussian:
    """A factorised Gaussian `N(mean, exp(logvar))` over latents of any shape `(B, C, ...)`.

    Args:
        mean: `(B, C, ...)` posterior mean.
        logvar: same shape as `mean`; clamped to `[LOGVAR_MIN, LOGVAR_MAX]`.
    """

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(
                f"mean and logvar must have the same shape, got {tuple(mean.shape)} and {tuple(logvar.shape)}"
            )
        self.mean = mean
        self.logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    @classmethod
    def from_moments(cls, moments: Tensor, dim: int = 1) -> DiagonalGaussian:
        """Split `moments` (mean and logvar stacked along `dim`, e.g. `(B, 2C, ...)`) into a Gaussian."""
        if moments.shape[dim] % 2 != 0:
            raise ValueError(f"moments must have an even size along dim {dim}, got {moments.shape[dim]}")
        mean, logvar = moments.chunk(2, dim=dim)
        return cls(mean, logvar)

    @classmethod
    def cat(cls, parts: list[DiagonalGaussian], dim: int) -> DiagonalGaussian:
        """Concatenate posteriors along `dim` (e.g. chunks in time or tiles)."""
        return cls(torch.cat([p.mean for p in parts], dim), torch.cat([p.logvar for p in parts], dim))

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample `mean + std * eps`; `generator` makes it reproducible."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self, other: DiagonalGaussian | None = None, reduction: str = "sum") -> Tensor:
        """KL(self || other), `other` defaults to N(0, I); `(B,)`, summed (or averaged) over non-batch dims"""
        mean, var, logvar = self.mean.float(), self.var.float(), self.logvar.float()
        if other is None:
            elem = 0.5 * (mean.pow(2) + var - 1.0 - logvar)
        else:
            o_mean, o_var, o_logvar = other.mean.float(), other.var.float(), other.logvar.float()
            elem = 0.5 * ((mean - o_mean).pow(2) / o_var + var / o_var - 1.0 - logvar + o_logvar)
        dims = tuple(range(1, elem.dim()))
        if reduction == "sum":
            return elem.sum(dim=dims)
        if reduction == "mean":
            return elem.mean(dim=dims)
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")

    def nll(self, sample: Tensor) -> Tensor:
        """Negative log-likelihood of `sample` under this Gaussian, summed over non-batch dims: `(B,)`."""
        log_two_pi = 1.8378770664093453
        elem = 0.5 * (log_two_pi + self.logvar + (sample - self.mean).pow(2) / self.var)
        return elem.float().sum(dim=tuple(range(1, elem.dim())))


class LatentStatsMixin(nn.Module):
    """Per-channel latent statistics used to whiten latents for the DiT.

    Registers buffers `latent_mean` and `latent_std` of shape `(C,)` (identity by default; they are saved in
    the `state_dict`). Channels are dim 1 of any latent `(B, C, ...)`.
    """

    latent_mean: Tensor
    latent_std: Tensor

    def _init_latent_stats(self, channels: int) -> None:
        self.register_buffer("latent_mean", torch.zeros(channels))
        self.register_buffer("latent_std", torch.ones(channels))

    def _stat_view(self, stat: Tensor, z: Tensor) -> Tensor:
        if z.dim() < 2 or z.shape[1] != stat.shape[0]:
            raise ValueError(f"latents must be (B, {stat.shape[0]}, ...), got {tuple(z.shape)}")
        return stat.to(z.dtype).view(1, -1, *([1] * (z.dim() - 2)))

    def normalize_latents(self, z: Tensor) -> Tensor:
        """`(z - latent_mean) / latent_std` per channel; same shape as `z`."""
        return (z - self._stat_view(self.latent_mean, z)) / self._stat_view(self.latent_std, z)

    def denormalize_latents(self, z: Tensor) -> Tensor:
        """Inverse of `normalize_latents`."""
        return z * self._stat_view(self.latent_std, z) + self._stat_view(self.latent_mean, z)

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-channel statistics (e.g. measured over a dataset's latents)."""
        c = self.latent_mean.shape[0]
        mean, std = torch.as_tensor(mean), torch.as_tensor(std)
        if mean.shape != (c,) or std.shape != (c,):
            raise ValueError(
                f"latent stats must have shape ({c},), got {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError(f"latent std must be positive, got min {float(std.min())}")
        self.latent_mean.copy_(mean.to(self.latent_mean))
        self.latent_std.copy_(std.to(self.latent_std))
