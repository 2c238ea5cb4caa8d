"""The VAE training losses: video (reconstruction + KL, optional LPIPS from a local file, optional 3D PatchGAN
with the VQGAN adaptive weight) and audio (log-mel L1 + KL, masked for clips without sound).

The discriminator network is in :mod:`sora.models.discriminator`. The VAE modules hold a loss as ``loss``, so
checkpoint keys (``loss.discriminator.net.*``) are what they were when these classes lived in sora/models/.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from sora.models.discriminator import PatchDiscriminator3D
from sora.models.distributions import DiagonalGaussian


def _load_lpips(weights_path: str) -> nn.Module:
    """LPIPS(VGG) from a local state_dict (from `lpips.LPIPS(net='vgg').state_dict()`); never downloads."""
    try:
        import lpips  # optional dependency
    except ImportError as e:
        raise ImportError("perceptual loss needs the optional `lpips` package (pip install lpips)") from e
    net = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)  # no weights fetched
    net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return net


def foreground_mask(video: Tensor, threshold: float) -> Tensor:
    """How far each pixel is from its frame's background, in [0, 1]: ``(B, 3, T, H, W) -> (B, 1, T, H, W)``.

    The background colour of a frame is its per-channel median (the backdrop covers most of it); a pixel's
    distance is the sum over channels of its absolute difference from it, and ``min(distance / threshold,
    1)`` is returned. Not differentiated (a weight, not a target)."""
    with torch.no_grad():
        v = video.float()
        background = v.flatten(3).median(dim=-1).values[..., None, None]  # (B, 3, T, 1, 1)
        distance = (v - background).abs().sum(dim=1, keepdim=True)  # (B, 1, T, H, W)
        return (distance / threshold).clamp(max=1.0)


class VideoVAELoss(nn.Module):
    """Reconstruction (L1 or Charbonnier) + KL, optional LPIPS, optional 3D PatchGAN with adaptive weight.

    Reconstruction and KL are both normalised per input element (KL summed over latents, divided by the number
    of video elements), so `kl_weight` means what it means in LDM / Wan configs (~1e-6).

    Args:
        recon_loss: "l1" or "charbonnier".
        kl_weight: weight of the KL term.
        perceptual_weight: LPIPS weight; > 0 needs `lpips_weights_path` or `perceptual_module`.
        lpips_weights_path: local LPIPS(VGG) state_dict; nothing is ever downloaded.
        perceptual_module: any `(N, 3, H, W), (N, 3, H, W) -> (N, ...)` distance, instead of LPIPS.
        perceptual_frames: frames per clip (evenly spaced) scored by the perceptual loss.
        disc_weight: adversarial weight (0 disables the discriminator).
        disc_start_step: global step from which the adversarial terms are on.
        foreground_weight: extra reconstruction weight of the pixels that differ from their frame's
            background (:func:`foreground_mask`): each pixel's error counts ``1 + foreground_weight * m``
            times (``m`` in [0, 1]), normalised by the mean weight. 0 (default) is the plain mean. Small
            objects on a flat backdrop are a few % of the pixels: under the plain mean the VAE learns the
            backdrop and the objects' brightness first and their colour last (the quickstart's 8x VAE after
            900 steps drew every object beige).
        foreground_threshold: colour distance from the background (sum over RGB in [-1, 1] units) at which a
            pixel counts fully as foreground (``m = min(distance / threshold, 1)``).
    """

    def __init__(
        self,
        recon_loss: str = "l1",
        charbonnier_eps: float = 1e-3,
        kl_weight: float = 1e-6,
        perceptual_weight: float = 0.0,
        lpips_weights_path: str | None = None,
        perceptual_module: nn.Module | None = None,
        perceptual_frames: int = 4,
        disc_weight: float = 0.0,
        disc_start_step: int = 0,
        disc_base_channels: int = 64,
        disc_num_layers: int = 3,
        max_adaptive_weight: float = 1e4,
        foreground_weight: float = 0.0,
        foreground_threshold: float = 0.3,
    ) -> None:
        super().__init__()
        if foreground_weight < 0 or foreground_threshold <= 0:
            raise ValueError(
                f"foreground_weight must be >= 0 and foreground_threshold > 0, got {foreground_weight}, "
                f"{foreground_threshold}"
            )
        self.foreground_weight, self.foreground_threshold = foreground_weight, foreground_threshold
        if recon_loss not in ("l1", "charbonnier"):
            raise ValueError(f"recon_loss must be 'l1' or 'charbonnier', got {recon_loss!r}")
        self.recon_loss, self.charbonnier_eps, self.kl_weight = recon_loss, charbonnier_eps, kl_weight
        self.perceptual_weight, self.perceptual_frames = perceptual_weight, perceptual_frames
        self.perceptual: nn.Module | None = None
        if perceptual_weight > 0:
            if perceptual_module is None and lpips_weights_path is None:
                raise ValueError(
                    "perceptual_weight > 0 needs lpips_weights_path (a local LPIPS state_dict; nothing is "
                    "downloaded) or a perceptual_module"
                )
            self.perceptual = perceptual_module or _load_lpips(lpips_weights_path)  # type: ignore[arg-type]
            self.perceptual.eval().requires_grad_(False)
        self.disc_weight, self.disc_start_step = disc_weight, disc_start_step
        self.max_adaptive_weight = max_adaptive_weight
        self.discriminator = None
        if disc_weight > 0:
            self.discriminator = PatchDiscriminator3D(3, disc_base_channels, disc_num_layers)

    def discriminator_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.disc_start_step

    def _perceptual(self, video: Tensor, recon: Tensor) -> Tensor:
        assert self.perceptual is not None
        n = min(self.perceptual_frames, video.shape[2])
        idx = torch.linspace(0, video.shape[2] - 1, n).round().long()
        real = rearrange(video[:, :, idx], "b c t h w -> (b t) c h w")
        fake = rearrange(recon[:, :, idx], "b c t h w -> (b t) c h w")
        return self.perceptual(fake.float(), real.float()).mean()

    def adaptive_weight(self, rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
        """VQGAN: `disc_weight * |grad rec| / |grad adv|` at the decoder's last layer (clamped, detached)."""
        rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        ratio = rec_grad.norm() / (g_grad.norm() + 1e-4)
        return ratio.clamp(0.0, self.max_adaptive_weight).detach() * self.disc_weight

    def forward(
        self,
        video: Tensor,
        recon: Tensor,
        posterior: DiagonalGaussian,
        step: int = 0,
        last_layer: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Generator/autoencoder loss for `video`, `recon` `(B, 3, T, H, W)`; returns `(loss, logs)`.

        `last_layer` (`vae.last_layer`) enables the adaptive adversarial weight; without it (or without grad)
        the adversarial term uses `disc_weight` as is. Gradients also reach the discriminator: step only the
        autoencoder's optimizer with this loss.
        """
        if video.shape != recon.shape:
            raise ValueError(f"video and recon shapes differ: {tuple(video.shape)} vs {tuple(recon.shape)}")
        diff = recon.float() - video.float()
        if self.recon_loss == "l1":
            err = diff.abs()
        else:
            err = torch.sqrt(diff.pow(2) + self.charbonnier_eps**2)
        if self.foreground_weight > 0:
            mask = foreground_mask(video, self.foreground_threshold)  # (B, 1, T, H, W)
            w = 1.0 + self.foreground_weight * mask
            rec = (err * w).mean() / w.mean()
        else:
            rec = err.mean()
        kl = posterior.kl().mean() / video[0].numel()
        logs = {"rec": rec.detach(), "kl": kl.detach()}
        nll = rec
        if self.perceptual is not None:
            p = self._perceptual(video, recon)
            nll = nll + self.perceptual_weight * p
            logs["perceptual"] = p.detach()
        loss = nll + self.kl_weight * kl
        if self.discriminator_active(step):
            assert self.discriminator is not None
            g_loss = -self.discriminator(recon).float().mean()
            if last_layer is not None and torch.is_grad_enabled() and nll.requires_grad:
                d_weight = self.adaptive_weight(nll, g_loss, last_layer)
            else:
                d_weight = torch.tensor(self.disc_weight, device=video.device)
            loss = loss + d_weight * g_loss
            logs.update(g_adv=g_loss.detach(), d_weight=d_weight)
        logs["loss"] = loss.detach()
        return loss, logs

    def discriminator_loss(
        self, video: Tensor, recon: Tensor, step: int = 0
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Hinge loss of the discriminator (`recon` is detached); zero-weighted before `disc_start_step`."""
        if self.discriminator is None:
            raise ValueError("discriminator_loss needs disc_weight > 0")
        real = self.discriminator(video).float()
        fake = self.discriminator(recon.detach()).float()
        d_loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
        # Zero-weighted (not skipped) before the start step: the graph still reaches every parameter (DDP).
        factor = 1.0 if self.discriminator_active(step) else 0.0
        logs = {
            "d_loss": d_loss.detach(),
            "logits_real": real.mean().detach(),
            "logits_fake": fake.mean().detach(),
        }
        return factor * d_loss, logs


def window_log_power(log_mel: Tensor, window: int) -> Tensor:
    """Log of the summed mel power ``exp(2 log_mel)`` over every ``window`` frames: ``(B, n_mels, F) -> (B,
    ceil(F / window))`` (the last window zero-power padded). What a loudness meter sees, per window."""
    x = 2.0 * log_mel.float().clamp(max=20.0)  # log power
    pad = (-x.shape[-1]) % window
    if pad:
        x = F.pad(x, (0, pad), value=-1e4)  # exp(-1e4) = 0: padding adds no power
    x = rearrange(x, "b m (n w) -> b n (m w)", w=window)
    return torch.logsumexp(x, dim=-1)  # (B, N)


class AudioVAELoss(nn.Module):
    """L1 on log-mel + `linear_weight` * spectral convergence + `energy_weight` * energy + `kl_weight` * KL,
    per sample, averaged over the samples with `has_audio`.

    L1 on log-mel is a median regression in the log domain: a short run settles it by flattening the rare
    loud bins of an impact, and the decoded sound came out 7.8 dB quieter than the clip it encoded (median
    -9 dB on the quickstart's world, up to -17 dB on metal clangs), though the mean log-mel matched. Spectral
    convergence on the linear mel magnitude, ``||exp(t) - exp(r)||_F / ||exp(t)||_F``, weighs bins by their
    energy, so the peaks that set the loudness count. The energy term is the loudness itself: the L1 between
    the log of the summed mel power of reconstruction and target in windows of `energy_window` frames
    (:func:`window_log_power`; 16 frames = 0.16 s at 100 frames/s), 1 nat = 4.3 dB.

    KL is summed over latents and divided by the number of log-mel elements (per-element, like the
    reconstruction). Clips without sound contribute exactly zero (a batch with no sound gives a zero loss that
    still backpropagates). Their audio should be zeros (silence); it is encoded anyway to keep shapes static.
    """

    def __init__(
        self,
        kl_weight: float = 1e-6,
        linear_weight: float = 0.0,
        energy_weight: float = 0.0,
        energy_window: int = 16,
    ) -> None:
        super().__init__()
        if linear_weight < 0 or energy_weight < 0:
            raise ValueError(
                f"linear_weight and energy_weight must be >= 0, got {linear_weight}, {energy_weight}"
            )
        if energy_window < 1:
            raise ValueError(f"energy_window must be >= 1 frame, got {energy_window}")
        self.kl_weight, self.linear_weight = kl_weight, linear_weight
        self.energy_weight, self.energy_window = energy_weight, energy_window

    def forward(
        self, recon: Tensor, target: Tensor, posterior: DiagonalGaussian, has_audio: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`recon`, `target` `(B, n_mels, F)`, `has_audio` `(B,)` bool -> `(loss, logs)`."""
        if recon.shape != target.shape:
            raise ValueError(f"recon and target shapes differ: {tuple(recon.shape)} vs {tuple(target.shape)}")
        b = recon.shape[0]
        if has_audio is None:
            has_audio = torch.ones(b, dtype=torch.bool, device=recon.device)
        if has_audio.shape != (b,):
            raise ValueError(f"has_audio must have shape ({b},), got {tuple(has_audio.shape)}")
        mask = has_audio.to(device=recon.device, dtype=torch.bool)
        rec = (recon.float() - target.float()).abs().mean(dim=(1, 2))  # (B,)
        kl = posterior.kl() / target[0].numel()  # (B,)
        lin_t, lin_r = target.float().exp(), recon.float().clamp(max=20.0).exp()  # linear mel magnitude
        sc = (lin_t - lin_r).flatten(1).norm(dim=1) / lin_t.flatten(1).norm(dim=1).clamp(min=1e-8)  # (B,)
        energy = window_log_power(recon, self.energy_window) - window_log_power(target, self.energy_window)
        energy = energy.abs().mean(dim=1)  # (B,)
        total = rec + self.linear_weight * sc + self.energy_weight * energy + self.kl_weight * kl
        per_sample = torch.where(mask, total, torch.zeros_like(rec))
        n = mask.sum().clamp(min=1)
        loss = per_sample.sum() / n
        logs = {
            "rec": (torch.where(mask, rec, torch.zeros_like(rec)).sum() / n).detach(),
            "kl": (torch.where(mask, kl, torch.zeros_like(kl)).sum() / n).detach(),
            "spectral_convergence": (torch.where(mask, sc, torch.zeros_like(sc)).sum() / n).detach(),
            "energy": (torch.where(mask, energy, torch.zeros_like(energy)).sum() / n).detach(),
            "audio_fraction": mask.float().mean(),
            "loss": loss.detach(),
        }
        return loss, logs
