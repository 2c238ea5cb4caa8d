"""Building blocks shared by the diffusion transformer and the text encoder.

Norms (RMSNorm, LayerNorm without affine), adaLN modulation helpers, MLPs (GELU-tanh or SwiGLU), the
timestep embedding, rotary position embeddings with real-valued positions (1D and multi-axis, so the time axis
can be in seconds), and one attention function with a key padding mask and a choice of backend (PyTorch SDPA
or flash-attn).

Everything here is compile-friendly: no data-dependent Python control flow, only shape-dependent code.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

AttnBackend = Literal["sdpa", "flash", "auto"]
MLPType = Literal["gelu", "swiglu"]

try:  # optional extra: `pip install sora[flash]`
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    FLASH_ATTN_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    flash_attn_func = flash_attn_varlen_func = None
    FLASH_ATTN_AVAILABLE = False


# ----------------------------------------------------------------------------------------------------------
# Norms
# ----------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, with an optional learned scale. Computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        """x (..., dim) -> (..., dim), same dtype."""
        weight = None if self.weight is None else self.weight.float()
        return F.rms_norm(x.float(), (x.shape[-1],), weight, self.eps).to(x.dtype)


def group_norm(
    channels: int, max_groups: int = 32, min_group_channels: int = 8, eps: float = 1e-6
) -> nn.GroupNorm:
    """GroupNorm with at most `max_groups` groups of at least `min_group_channels` channels (the VAEs' norm).

    A group of one channel is an instance norm: it erases that channel's mean over the normalised extent (a
    frame, a clip), i.e. the colour of a flat backdrop or the level of a sound, which narrow VAEs then
    struggle to carry (measured on the synthetic world: 2 groups at 16 channels beat 16 groups).
    """
    groups = max(1, min(max_groups, channels // min_group_channels))
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=eps)


def layer_norm(dim: int, eps: float = 1e-6) -> nn.LayerNorm:
    """LayerNorm without learned affine: adaLN supplies the per-token shift and scale instead."""
    return nn.LayerNorm(dim, elementwise_affine=False, eps=eps)


# ----------------------------------------------------------------------------------------------------------
# adaLN modulation
# ----------------------------------------------------------------------------------------------------------


class AdaLNModulation(nn.Module):
    """`SiLU -> Linear` producing `num_chunks` vectors of size `dim` from a conditioning vector.

    Zero-initialised (adaLN-zero, DiT paper): shifts, scales and gates all start at 0, so a block whose
    residual branches are multiplied by these gates starts as the identity map and the deep network trains
    stably from step 0. The conditioning may be per sample (B, 1, C), per frame (B, T, C) or per token
    (B, N, C).
    """

    def __init__(self, cond_dim: int, dim: int, num_chunks: int) -> None:
        super().__init__()
        self.num_chunks = num_chunks
        self.linear = nn.Linear(cond_dim, num_chunks * dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, cond: Tensor) -> tuple[Tensor, ...]:
        """cond (B, G, C) -> num_chunks tensors of shape (B, G, dim)."""
        return self.linear(F.silu(cond)).chunk(self.num_chunks, dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """`x * (1 + scale) + shift` with grouped conditioning.

    x (B, N, D); shift, scale (B, G, D) where the N tokens form G equal contiguous groups (G = 1: per sample,
    G = frames: per frame, G = N: per token). Returns (B, N, D).
    """
    x = x.unflatten(1, (shift.shape[1], -1))  # (B, G, N/G, D)
    x = x * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)
    return x.flatten(1, 2)  # (B, N, D)


def apply_gate(x: Tensor, gate: Tensor) -> Tensor:
    """`x * gate` with grouped gates: x (B, N, D), gate (B, G, D) -> (B, N, D)."""
    return (x.unflatten(1, (gate.shape[1], -1)) * gate.unsqueeze(2)).flatten(1, 2)


# ----------------------------------------------------------------------------------------------------------
# MLP and timestep embedding
# ----------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Transformer MLP. `gelu`: Linear -> GELU(tanh) -> Linear. `swiglu`: (SiLU(x W1) * x W3) W2.

    For SwiGLU the hidden width is 2/3 of `hidden_dim` (rounded up to a multiple of 64) so that both kinds
    have about the same parameter count and FLOPs for the same `mlp_ratio` (LLaMA convention).
    """

    def __init__(self, dim: int, hidden_dim: int, mlp_type: MLPType = "gelu") -> None:
        super().__init__()
        if mlp_type not in ("gelu", "swiglu"):
            raise ValueError(f"mlp_type must be 'gelu' or 'swiglu', got {mlp_type!r}")
        self.mlp_type = mlp_type
        if mlp_type == "swiglu":
            hidden_dim = swiglu_hidden_dim(hidden_dim)
            self.fc1 = nn.Linear(dim, 2 * hidden_dim)  # gate and value in one matmul
        else:
            self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.hidden_dim = hidden_dim

    def forward(self, x: Tensor) -> Tensor:
        """x (..., dim) -> (..., dim)."""
        h = self.fc1(x)
        if self.mlp_type == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h, approximate="tanh")
        return self.fc2(h)


def swiglu_hidden_dim(hidden_dim: int, multiple_of: int = 64) -> int:
    """Hidden width of a SwiGLU MLP matching a GELU MLP of width `hidden_dim` in parameters."""
    h = int(2 * hidden_dim / 3)
    return multiple_of * math.ceil(h / multiple_of)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> Tensor:
    """Sinusoidal features of real-valued timesteps.

    t (...) in [0, 1] (multiplied by `scale` so the frequencies match the usual 0..1000 range) -> (..., dim).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * scale).unsqueeze(-1) * freqs  # (..., half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Real-valued timesteps of any shape -> vectors: sinusoidal features then `Linear -> SiLU -> Linear`."""

    def __init__(self, hidden_size: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        # DiT init: small normal weights, so the embedding starts small but not zero.
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, t: Tensor) -> Tensor:
        """t (...) -> (..., hidden_size)."""
        emb = sinusoidal_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


# ----------------------------------------------------------------------------------------------------------
# Rotary position embedding
# ----------------------------------------------------------------------------------------------------------


def spatial_sincos_embedding(
    height: int, width: int, dim: int, device: torch.device | None = None, max_freq: float = 16.0
) -> Tensor:
    """Fixed 2D sine-cosine embedding (H * W, dim) of each cell's place in the frame, row-major.

    Coordinates are fractions of the frame, centred (``(i + 0.5) / H - 0.5`` in [-0.5, 0.5]), so a cell on
    the left third of a 64-pixel frame and one on the left third of a 128-pixel frame get the same vector:
    "left" means the same at every bucket size. Half the dimensions encode the row, half the column, each
    with ``dim // 4`` frequencies from 1 to ``max_freq`` cycles per frame (sin and cos).
    """
    if dim % 4:
        raise ValueError(f"the spatial embedding needs dim divisible by 4, got {dim}")
    n = dim // 4
    freqs = math.pi * torch.logspace(0, math.log2(max_freq), n, base=2.0, device=device)  # (n,)
    rows = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height - 0.5
    cols = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width - 0.5
    r = rows[:, None, None] * freqs  # (H, 1, n)
    c = cols[None, :, None] * freqs  # (1, W, n)
    r, c = torch.broadcast_tensors(r, c)  # (H, W, n)
    emb = torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=-1)  # (H, W, dim)
    return emb.reshape(height * width, dim)


def rope_axes_dims(head_dim: int) -> tuple[int, int, int]:
    """Default split of a head's dimensions over (time, height, width), each even; time gets the remainder.

    Same split as Wan: height and width get `2 * (head_dim // 6)` each.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_angles(positions: Tensor, axes_dims: tuple[int, ...], theta: float = 10000.0) -> Tensor:
    """Rotation angles for real-valued positions on several axes.

    positions (..., A) float (A = number of axes; any real value, e.g. seconds times a scale); axes_dims: the
    (even) number of head dimensions given to each axis. Returns angles (..., sum(axes_dims) / 2): for axis a
    with d_a dimensions, `pos_a * theta ** (-2i / d_a)` for i < d_a / 2, axes concatenated.
    """
    if positions.shape[-1] != len(axes_dims):
        raise ValueError(f"positions have {positions.shape[-1]} axes but axes_dims has {len(axes_dims)}")
    angles = []
    for a, d in enumerate(axes_dims):
        if d % 2:
            raise ValueError(f"every RoPE axis needs an even number of dimensions, got {axes_dims}")
        freqs = theta ** (-torch.arange(0, d, 2, device=positions.device, dtype=torch.float32) / d)  # (d/2,)
        angles.append(positions[..., a : a + 1].float() * freqs)
    return torch.cat(angles, dim=-1)


def rope_cos_sin(
    positions: Tensor, axes_dims: tuple[int, ...], theta: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """positions (..., N, A) -> cos, sin (..., N, head_dim / 2) in float32."""
    angles = rope_angles(positions, axes_dims, theta)
    return angles.cos(), angles.sin()


def rope_1d(positions: Tensor, dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """1D RoPE: positions (..., N) -> cos, sin (..., N, dim / 2)."""
    return rope_cos_sin(positions.unsqueeze(-1), (dim,), theta)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x_i, x_{i + D/2}) of x by the given angles ("rotate-half" layout), in float32.

    x (B, H, N, D); cos, sin broadcastable to (B, H, N, D/2), e.g. (B or 1, 1, N, D/2). Returns x's dtype.
    Since a rotation by angle a followed by the transpose of one by angle b is a rotation by (a - b),
    `<rope(q, p), rope(k, p')>` depends only on p - p' (relative positions).
    """
    dtype = x.dtype
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(dtype)


# ----------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------


def resolve_attn_backend(backend: AttnBackend, q: Tensor) -> str:
    """`auto` picks flash-attn when importable and the inputs are CUDA fp16/bf16, SDPA otherwise."""
    if backend not in ("sdpa", "flash", "auto"):
        raise ValueError(f"attn_backend must be 'sdpa', 'flash' or 'auto', got {backend!r}")
    flash_ok = FLASH_ATTN_AVAILABLE and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
    if backend == "flash" and not flash_ok:
        raise ValueError(
            "attn_backend='flash' needs flash-attn installed (pip install 'sora[flash]') and CUDA fp16/bf16 "
            f"inputs; got flash_attn available={FLASH_ATTN_AVAILABLE}, device={q.device}, dtype={q.dtype}"
        )
    if backend == "auto":
        return "flash" if flash_ok else "sdpa"
    return backend


def attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None, backend: AttnBackend = "sdpa"
) -> Tensor:
    """Multi-head attention over all tokens.

    q, k, v (B, H, N, D); key_padding_mask (B, N) bool, True = a real token that may be attended to (every
    query row must keep at least one key). Returns (B, H, N, D).

    With flash-attn and a mask the sequences are unpadded and run through the varlen kernel; outputs at padded
    query positions are then zero (SDPA computes them normally); they are never used downstream.
    """
    if backend == "sdpa" or resolve_attn_backend(backend, q) == "sdpa":
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, N)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return _flash_attention(q, k, v, key_padding_mask)


def _flash_attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """flash-attn path (CUDA, fp16/bf16). Same shapes as `attention`."""
    B, H, N, D = q.shape
    q, k, v = (rearrange(x, "b h n d -> b n h d") for x in (q, k, v))
    if key_padding_mask is None:
        out = flash_attn_func(q, k, v)  # (B, N, H, D)
        return rearrange(out, "b n h d -> b h n d")
    # Unpad: keep only real tokens, packed back to back; cu_seqlens marks where each sample starts.
    keep = key_padding_mask.reshape(-1).nonzero(as_tuple=True)[0]  # (total,)
    lengths = key_padding_mask.sum(dim=1, dtype=torch.int32)  # (B,)
    cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))  # (B + 1,)
    max_len = int(lengths.max())
    q, k, v = (rearrange(x, "b n h d -> (b n) h d").index_select(0, keep) for x in (q, k, v))
    out = flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)  # (total, H, D)
    padded = out.new_zeros(B * N, H, D).index_copy_(0, keep, out)
    return rearrange(padded, "(b n) h d -> b h n d", b=B)
