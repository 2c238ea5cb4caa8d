"""Causal 3D-convolutional video VAE (Wan / WF-VAE style); its training loss is in sora/training/vae_loss.py.

A clip of `1 + 4k` frames `(B, 3, 1 + 4k, H, W)` in [-1, 1] becomes latents `(B, 16, 1 + k, H / 8, W / 8)`.
Every temporal convolution is causal (padded on the past side by replicating the first frame), every norm
sees one frame at a time (GroupNorm per frame), and nothing attends across time, so:

- the first frame is encoded alone: a single image is a valid 1-frame video;
- encoding a prefix of frames gives the prefix of the latents (and likewise for decoding);
- chunked encode/decode with a feature cache (each causal conv keeps the input frames it has not yet
  consumed, at most `kernel_t - 1`) equals whole-clip processing, with memory bounded by the chunk size.

Spatial tiling with linear-ramp blended overlaps bounds memory in height and width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from sora.models.distributions import DiagonalGaussian, LatentStatsMixin
from sora.models.layers import group_norm

# A feature cache for chunked processing: each causal layer stores what it needs from the previous chunk
# under its own module key. A fresh empty dict starts a new clip; `None` means whole-clip processing.
Cache = dict


class NormAct(nn.Module):
    """GroupNorm over each frame separately, then SiLU; `(B, C, T, H, W) -> (B, C, T, H, W)`.

    Statistics span (channels of a group, H, W) of one frame, never time: GroupNorm over time would leak the
    future into the past (breaking causality and chunked == whole). Spatial statistics train much faster than
    a per-pixel channel RMSNorm (tried: it sat on a plateau for many more steps) but mean each tile is
    normalised with its own statistics, so tiling is approximate (hence the blending). Float32 under autocast.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = group_norm(channels, eps=eps)  # >= 8 channels per group: see `group_norm`

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        n = self.norm
        y = rearrange(x.float(), "b c t h w -> (b t) c h w")  # (B * T, C, H, W)
        y = F.group_norm(y, n.num_groups, n.weight.float(), n.bias.float(), n.eps)
        return F.silu(rearrange(y, "(b t) c h w -> b c t h w", b=x.shape[0]).to(x.dtype))


class CausalConv3d(nn.Module):
    """3D conv, causal in time, zero-padded ("same") in space; `(B, C, T, H, W) -> (B, C', T', H', W')`.

    Whole clip: `kernel_t - 1` copies of the first frame are prepended, so `T' = (T - 1) // stride_t + 1`
    and output `i` sees input frames `<= i * stride_t`. Chunked (`cache` is a dict): the first chunk is padded
    the same way; later chunks are prefixed with the frames the previous chunk left unconsumed, so any split
    of the clip gives the same outputs. A chunk too short to produce an output returns zero frames.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        st, sh, sw = (stride,) * 3 if isinstance(stride, int) else stride
        self.kernel_t, self.stride_t = kt, st
        self.conv = nn.Conv3d(
            in_channels, out_channels, (kt, kh, kw), stride=(st, sh, sw), padding=(0, kh // 2, kw // 2)
        )

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        kt, st = self.kernel_t, self.stride_t
        if cache is not None and self in cache:
            x = torch.cat([cache[self].to(x.dtype), x], dim=2)  # (B, C, T_cache + T, H, W)
        elif kt > 1:
            assert x.shape[2] > 0, "the first chunk of a clip always has a frame"
            x = torch.cat([x[:, :, :1].expand(-1, -1, kt - 1, -1, -1), x], dim=2)  # (B, C, kt - 1 + T, H, W)
        n_out = (x.shape[2] - kt) // st + 1 if x.shape[2] >= kt else 0
        if cache is not None and (kt > 1 or st > 1):
            cache[self] = x[:, :, n_out * st :].clone()  # clone: do not keep the whole chunk alive
        if n_out == 0:  # only when chunking: a (rare, cheap) dummy call gives the output's shape and dtype
            return self.conv(x.new_zeros(*x.shape[:2], kt, *x.shape[3:]))[:, :, :0]
        return self.conv(x[:, :, : (n_out - 1) * st + kt])  # (B, C', n_out, H', W')


class ResBlock3d(nn.Module):
    """Pre-norm residual block of two causal 3x3x3 convs; `(B, C_in, T, H, W) -> (B, C_out, T, H, W)`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.act1 = NormAct(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.act2 = NormAct(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.skip = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None
        # Zero-initialised residual branch: a fresh block is its skip path, so a fresh VAE is a linear
        # down/up-sampler (with the shortcuts) that the blocks refine (+2 dB held-out PSNR after 1000 steps
        # of the tiny VAE on the synthetic world).
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        h = self.conv1(self.act1(x), cache)  # (B, C_out, T, H, W)
        h = self.conv2(self.act2(h), cache)  # (B, C_out, T, H, W)
        return h + (x if self.skip is None else self.skip(x))


def _init_pick_last_frame(conv: CausalConv3d, copies: int) -> None:
    """Make a `(kt, 1, 1)` conv output `copies` stacked copies of its newest input frame.

    Why: temporal down/up-sampling then starts as plain frame subsampling / nearest-neighbour repetition, so a
    fresh model passes each frame straight through (as for images) and learns temporal mixing on top.
    """
    w = conv.conv.weight  # (copies * C, C, kt, 1, 1)
    c = w.shape[1]
    assert w.shape[0] == copies * c and w.shape[3:] == (1, 1)
    with torch.no_grad():
        w.zero_()
        conv.conv.bias.zero_()
        eye = torch.eye(c, dtype=w.dtype)
        for r in range(copies):
            w[r * c : (r + 1) * c, :, -1, 0, 0] = eye


class Downsample(nn.Module):
    """2x spatial (strided 3x3 conv per frame), optionally 2x causal temporal: `T -> (T - 1) // 2 + 1`."""

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.spatial = CausalConv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2))
        self.temporal = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1)) if temporal else None
        if self.temporal is not None:
            _init_pick_last_frame(self.temporal, copies=1)

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        x = self.spatial(x, cache)  # (B, C, T, H / 2, W / 2)
        if self.temporal is not None:
            x = self.temporal(x, cache)  # (B, C, (T - 1) // 2 + 1, H / 2, W / 2)
        return x


class Upsample(nn.Module):
    """Optionally 2x causal temporal (depth-to-time: `T -> 2T - 1`), then 2x spatial (nearest + 3x3 conv).

    In time, a causal conv makes two frames per input frame; the first frame of a clip stands for a single
    frame (it was encoded alone), so its earlier copy is dropped.
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = CausalConv3d(channels, 2 * channels, (3, 1, 1)) if temporal else None
        if self.temporal is not None:
            _init_pick_last_frame(self.temporal, copies=2)
        self.spatial = CausalConv3d(channels, channels, (1, 3, 3))

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        if self.temporal is not None:
            x = rearrange(self.temporal(x, cache), "b (r c) t h w -> b c (t r) h w", r=2)  # (B, C, 2T, H, W)
            if cache is None or self not in cache:
                x = x[:, :, 1:]  # (B, C, 2T - 1, H, W): first frame of the clip
            if cache is not None:
                cache[self] = torch.empty(0)  # marks "first chunk done"
        x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # (B, C, T', 2H, 2W) nearest
        return self.spatial(x, cache)


class Encoder3d(nn.Module):
    """`(B, C_in, T, H, W) -> (B, 2 * latent_channels, t, H / s, W / s)` (mean and logvar stacked)."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        base_channels: int,
        channel_mult: Sequence[int],
        num_res_blocks: int,
        temporal_down: Sequence[bool],
        patch_size: int,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.latent_channels = latent_channels
        ch = base_channels * channel_mult[0]
        layers: list[nn.Module] = [CausalConv3d(in_channels * patch_size**2, ch, 3)]
        for i, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock3d(ch, base_channels * mult))
                ch = base_channels * mult
            if i < len(channel_mult) - 1:
                layers.append(Downsample(ch, temporal_down[i]))
        layers += [ResBlock3d(ch, ch), ResBlock3d(ch, ch), NormAct(ch)]
        layers.append(CausalConv3d(ch, 2 * latent_channels, 3))
        # logvar starts at -6 (std 0.05), not 0 (std 1): the decoder sees a clean latent from step 0 instead
        # of noise swamping the mean, and the KL term then pulls the variance up to what the data allows.
        nn.init.constant_(layers[-1].conv.bias[latent_channels:], -6.0)
        self.layers = nn.ModuleList(layers)
        # A 1x1 linear path from the residual stream to the latent mean, around the final GroupNorm (which
        # removes each frame's per-group mean, hence flat colours); the decoder has the same around its own.
        self.shortcut = CausalConv3d(ch, latent_channels, 1) if shortcut else None

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        p = self.patch_size
        x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=p, q=p)  # (B, C * p * p, T, H / p, W / p)
        for layer in self.layers[:-2]:
            x = layer(x, cache)
        moments = self.layers[-1](self.layers[-2](x, cache), cache)  # (B, 2 * latent_channels, t, h, w)
        if self.shortcut is None:
            return moments
        mean = moments[:, : self.latent_channels] + self.shortcut(x)
        return torch.cat([mean, moments[:, self.latent_channels :]], dim=1)


class Decoder3d(nn.Module):
    """`(B, latent_channels, t, h, w) -> (B, C_out, T, h * s, w * s)`, mirroring `Encoder3d`."""

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        base_channels: int,
        channel_mult: Sequence[int],
        num_res_blocks: int,
        temporal_down: Sequence[bool],
        patch_size: int,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        ch = base_channels * channel_mult[-1]
        layers: list[nn.Module] = [CausalConv3d(latent_channels, ch, 3)]
        layers += [ResBlock3d(ch, ch), ResBlock3d(ch, ch)]
        for i in reversed(range(len(channel_mult))):
            for _ in range(num_res_blocks):
                layers.append(ResBlock3d(ch, base_channels * channel_mult[i]))
                ch = base_channels * channel_mult[i]
            if i > 0:
                layers.append(Upsample(ch, temporal_down[i - 1]))
        layers.append(NormAct(ch))
        self.conv_out = CausalConv3d(ch, out_channels * patch_size**2, 3)
        self.layers = nn.ModuleList(layers)
        self.shortcut = CausalConv3d(ch, out_channels * patch_size**2, 1) if shortcut else None

    def forward(self, z: Tensor, cache: Cache | None = None) -> Tensor:
        for layer in self.layers[:-1]:
            z = layer(z, cache)
        x = self.conv_out(self.layers[-1](z, cache), cache)  # (B, C_out * p * p, T, H / p, W / p)
        if self.shortcut is not None:
            x = x + self.shortcut(z)
        p = self.patch_size
        return rearrange(x, "b (c p q) t h w -> b c t (h p) (w q)", p=p, q=p)  # (B, C_out, T, H, W)


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    return list(range(0, size - tile, stride)) + [size - tile]


def _ramp(n: int, overlap: int) -> Tensor:
    """Blend weights along one tile axis: linear ramps of `overlap` steps at both ends, never zero."""
    w = torch.ones(n)
    k = min(overlap, n // 2)
    if k > 0:
        r = torch.arange(1, k + 1, dtype=torch.float32) / (k + 1)
        w[:k] = r
        w[n - k :] = torch.minimum(w[n - k :], r.flip(0))
    return w


def _tiled(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int, up: int, down: int) -> Tensor:
    """Apply `fn` on overlapping spatial tiles of `x (B, C, T, H, W)` and blend (weighted average).

    `fn` maps spatial size `n` to `n * up // down`; `tile` and `overlap` are in input units.
    """
    height, width = x.shape[-2:]
    stride = tile - overlap
    out = weight = None
    for y0 in _tile_starts(height, tile, stride):
        for x0 in _tile_starts(width, tile, stride):
            y = fn(x[..., y0 : y0 + tile, x0 : x0 + tile])  # (B, C', T', th', tw')
            if out is None:
                out = y.new_zeros(*y.shape[:-2], height * up // down, width * up // down)
                weight = y.new_zeros(height * up // down, width * up // down)
            w = (
                _ramp(y.shape[-2], overlap * up // down)[:, None] * _ramp(y.shape[-1], overlap * up // down)
            ).to(y)
            oy, ox = y0 * up // down, x0 * up // down
            out[..., oy : oy + y.shape[-2], ox : ox + y.shape[-1]] += y * w
            weight[oy : oy + y.shape[-2], ox : ox + y.shape[-1]] += w
    assert out is not None and weight is not None and bool((weight > 0).all())
    return out / weight


class CausalVideoVAE(LatentStatsMixin):
    """Causal video VAE: `(B, 3, 1 + 4k, H, W)` in [-1, 1] <-> latents `(B, 16, 1 + k, H / 8, W / 8)`.

    Args:
        in_channels: video channels (3).
        latent_channels: latent channels (16).
        base_channels: width of the first level; level `i` has `base_channels * channel_mult[i]` channels.
        channel_mult: per-level width multipliers; each level after the first halves height and width.
        num_res_blocks: residual blocks per level (encoder and decoder).
        temporal_compression: 1 (images / per-frame) or a power of two up to `2 ** (len(channel_mult) - 1)`;
            the temporal downsamplings are applied at the deepest levels.
        patch_size: space-to-depth factor applied before the first conv (and undone after the last), which
            makes the full-resolution level cheap. Spatial compression: `patch_size * 2 ** (len(mult) - 1)`.
        shortcut: 1x1 linear paths around the encoder's and the decoder's output norm + conv (the final
            GroupNorm erases flat colours). Measured on the tiny VAE (synthetic world, 1000 steps): +3.6 dB
            held-out PSNR. Off drops them.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 16,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        temporal_compression: int = 4,
        patch_size: int = 1,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        n_down = len(channel_mult) - 1
        t_down = int(math.log2(temporal_compression)) if temporal_compression >= 1 else -1
        if temporal_compression < 1 or 2**t_down != temporal_compression or t_down > n_down:
            raise ValueError(
                f"temporal_compression must be a power of two <= 2 ** (len(channel_mult) - 1) = {2**n_down}, "
                f"got {temporal_compression}"
            )
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.temporal_compression = temporal_compression
        self.spatial_compression = patch_size * 2**n_down
        temporal_down = [i >= n_down - t_down for i in range(n_down)]
        args = (
            latent_channels,
            base_channels,
            channel_mult,
            num_res_blocks,
            temporal_down,
            patch_size,
            shortcut,
        )
        self.encoder = Encoder3d(in_channels, *args)
        self.decoder = Decoder3d(in_channels, *args)
        self._init_latent_stats(latent_channels)

    @property
    def last_layer(self) -> Tensor:
        """The decoder's last conv weight (for the VQGAN-style adaptive adversarial weight)."""
        return self.decoder.conv_out.conv.weight

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """`(t, h, w)` of the latents of a `num_frames x height x width` clip; ValueError if not encodable."""
        tc, sc = self.temporal_compression, self.spatial_compression
        if num_frames < 1 or (num_frames - 1) % tc != 0:
            raise ValueError(f"num_frames must be 1 + {tc} * k (k >= 0), got {num_frames}")
        if height < sc or width < sc or height % sc != 0 or width % sc != 0:
            raise ValueError(f"height and width must be positive multiples of {sc}, got {height}x{width}")
        return 1 + (num_frames - 1) // tc, height // sc, width // sc

    def _check_video(self, video: Tensor) -> None:
        if video.dim() != 5 or video.shape[1] != self.in_channels:
            raise ValueError(f"video must be (B, {self.in_channels}, T, H, W), got {tuple(video.shape)}")
        self.latent_shape(*video.shape[2:])

    def _check_latents(self, z: Tensor) -> None:
        if z.dim() != 5 or z.shape[1] != self.latent_channels or min(z.shape[2:]) < 1:
            raise ValueError(f"latents must be (B, {self.latent_channels}, t, h, w), got {tuple(z.shape)}")

    def encode(self, video: Tensor) -> DiagonalGaussian:
        """`(B, 3, 1 + 4k, H, W)` -> posterior with mean/logvar `(B, 16, 1 + k, H / 8, W / 8)`."""
        self._check_video(video)
        return DiagonalGaussian.from_moments(self.encoder(video))

    def decode(self, z: Tensor) -> Tensor:
        """`(B, 16, 1 + k, h, w)` -> video `(B, 3, 1 + 4k, 8h, 8w)` (not clamped)."""
        self._check_latents(z)
        return self.decoder(z)

    def encode_chunked(self, video: Tensor, chunk_frames: int) -> DiagonalGaussian:
        """Same as `encode`, processing `chunk_frames` frames at a time with a causal feature cache."""
        self._check_video(video)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        cache: Cache = {}
        n = chunk_frames
        parts = [self.encoder(video[:, :, s : s + n], cache) for s in range(0, video.shape[2], n)]
        return DiagonalGaussian.from_moments(torch.cat(parts, dim=2))

    def decode_chunked(self, z: Tensor, chunk_latents: int) -> Tensor:
        """Same as `decode`, processing `chunk_latents` latents at a time with a causal feature cache."""
        self._check_latents(z)
        if chunk_latents < 1:
            raise ValueError(f"chunk_latents must be >= 1, got {chunk_latents}")
        cache: Cache = {}
        n = chunk_latents
        parts = [self.decoder(z[:, :, s : s + n], cache) for s in range(0, z.shape[2], n)]
        return torch.cat(parts, dim=2)

    def _check_tiles(self, tile_size: int, tile_overlap: int) -> None:
        sc = self.spatial_compression
        if tile_size % sc != 0 or tile_overlap % sc != 0 or not 0 <= tile_overlap < tile_size:
            raise ValueError(
                f"tile_size and tile_overlap must be multiples of {sc} with 0 <= overlap < size, "
                f"got tile_size={tile_size}, tile_overlap={tile_overlap}"
            )

    def tiled_encode(
        self, video: Tensor, tile_size: int = 256, tile_overlap: int = 64, chunk_frames: int | None = None
    ) -> DiagonalGaussian:
        """`encode` on overlapping spatial tiles (sizes in pixels) blended by linear ramps; can chunk."""
        self._check_video(video)
        self._check_tiles(tile_size, tile_overlap)

        def fn(x: Tensor) -> Tensor:
            post = self.encode(x) if chunk_frames is None else self.encode_chunked(x, chunk_frames)
            return torch.cat([post.mean, post.logvar], dim=1)  # (B, 2C, t, h, w)

        moments = _tiled(fn, video, tile_size, tile_overlap, 1, self.spatial_compression)
        return DiagonalGaussian.from_moments(moments)

    def tiled_decode(
        self, z: Tensor, tile_size: int = 256, tile_overlap: int = 64, chunk_latents: int | None = None
    ) -> Tensor:
        """`decode` on overlapping spatial tiles (sizes in output pixels) blended with linear ramps."""
        self._check_latents(z)
        self._check_tiles(tile_size, tile_overlap)
        sc = self.spatial_compression

        def fn(x: Tensor) -> Tensor:
            return self.decode(x) if chunk_latents is None else self.decode_chunked(x, chunk_latents)

        return _tiled(fn, z, tile_size // sc, tile_overlap // sc, sc, 1)

    def forward(
        self, video: Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, DiagonalGaussian]:
        """`(B, 3, 1 + 4k, H, W)` -> `(recon (B, 3, 1 + 4k, H, W), posterior)`."""
        posterior = self.encode(video)  # mean/logvar (B, 16, 1 + k, H / 8, W / 8)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior  # (B, 3, 1 + 4k, H, W)
