"""The 3D PatchGAN discriminator the video VAE trains against (sora/training/vae_loss.py uses it)."""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator3D(nn.Module):
    """3D PatchGAN: `(B, 3, T, H, W)` -> patch logits `(B, 1, T', H / 2 ** num_layers, W / 2 ** num_layers)`.

    Not causal (it only scores clips); works for single images (T = 1) too.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, base_channels, (3, 4, 4), stride=(1, 2, 2), padding=1),
            nn.LeakyReLU(0.2),
        ]
        ch = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = (2, 2, 2) if i < num_layers else (1, 1, 1)  # last block keeps the patch grid
            kernel = (3, 4, 4) if i < num_layers else (3, 3, 3)
            layers += [
                nn.Conv3d(ch, out, kernel, stride=stride, padding=1),
                nn.GroupNorm(32 if out % 32 == 0 else 1, out),
            ]
            layers.append(nn.LeakyReLU(0.2))
            ch = out
        layers.append(nn.Conv3d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        # DCGAN/pix2pix init (N(0, 0.02)): small initial logits, so the hinge losses start balanced.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, video: Tensor) -> Tensor:
        """`(B, C, T, H, W)` -> logits `(B, 1, T', H', W')`."""
        return self.net(video)
