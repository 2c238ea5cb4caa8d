"""AVDiT: a joint audio+video diffusion transformer (MM-DiT style) with a timestep per token.

Three token streams, text, video patches and audio patches, each with its own adaLN modulation, norms, QKV and
output projections, QK RMS-norms and MLP, meet in one joint attention over [text, video, audio] (dual-stream
blocks). The last `single_stream_depth` blocks share one set of weights over the concatenated sequence.

Timesteps are per token: the adaLN conditioning of a token is `t_embed(t_token) + pooled_text`, so frames,
clip prefixes or a whole modality given with t = 0 act as clean conditions (t2av, i2v, extension, v2a, a2v).
The modulation is computed at the granularity the timesteps are given at (per sample, per latent frame or per
token) and broadcast over the contiguous tokens of each group, so per-frame timesteps cost nothing extra.

Positions: 3D RoPE over (time, height, width). Time is in seconds times `rope_time_scale` for both video and
audio, so a sound token and the frame it belongs to share a temporal position. With the default
`rope_time_scale=25` one audio latent step (1/25 s) is one RoPE unit and a video latent frame at 24 fps
(4/24 s) is 4.17 units. Height/width are patch indices centred on the middle of the frame; audio tokens sit at
the spatial centre (0, 0) and text tokens at the origin on every axis (no rotation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from sora.models.layers import (
    MLP,
    AdaLNModulation,
    AttnBackend,
    MLPType,
    RMSNorm,
    TimestepEmbedder,
    apply_gate,
    apply_rope,
    attention,
    layer_norm,
    modulate,
    rope_axes_dims,
    rope_cos_sin,
    spatial_sincos_embedding,
    swiglu_hidden_dim,
)

STREAMS = ("text", "video", "audio")


class StreamLayer(nn.Module):
    """One stream's weights in one block: adaLN modulation (6 vectors), norms, QKV, QK-norm, out proj, MLP.

    ``pre_only``: the stream only contributes keys and values (SD3's ``context_pre_only``): used for the text
    stream of the last dual-stream block, whose output nobody reads. It then has no out proj / MLP (weights
    that would never receive a gradient, which also breaks DDP) and a 2-vector modulation (shift, scale).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float,
        mlp_type: MLPType,
        qk_norm: bool,
        pre_only: bool = False,
    ):
        super().__init__()
        self.num_heads, self.pre_only = num_heads, pre_only
        head_dim = hidden_size // num_heads
        self.modulation = AdaLNModulation(hidden_size, hidden_size, 2 if pre_only else 6)
        self.norm1 = layer_norm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.q_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()
        if not pre_only:
            self.proj = nn.Linear(hidden_size, hidden_size)
            self.norm2 = layer_norm(hidden_size)
            self.mlp = MLP(hidden_size, int(hidden_size * mlp_ratio), mlp_type)

    def qkv_heads(self, x: Tensor, shift: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, N, D), shift/scale (B, G, D) -> q, k, v (B, H, N, D/H), q and k RMS-normed."""
        h = modulate(self.norm1(x), shift, scale)  # (B, N, D)
        q, k, v = rearrange(self.qkv(h), "b n (k h d) -> k b h n d", k=3, h=self.num_heads)
        return self.q_norm(q), self.k_norm(k), v

    def finish(self, x: Tensor, attn_out: Tensor, mod: tuple[Tensor, ...]) -> Tensor:
        """Gated residual attention output, then the gated residual MLP.

        x, attn_out (B, N, D) -> (B, N, D); a ``pre_only`` stream is returned unchanged."""
        if self.pre_only:
            return x
        _, _, gate_attn, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + apply_gate(self.proj(attn_out), gate_attn)
        return x + apply_gate(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)), gate_mlp)


class AVDiTBlock(nn.Module):
    """Joint-attention block over the streams [text, video(, audio)].

    Dual-stream (`shared=False`): each stream has its own `StreamLayer`. Single-stream (`shared=True`): one
    `StreamLayer` applied to every stream, which equals applying it to the concatenated sequence since all its
    ops except attention are per token. No data-dependent control flow: `torch.compile(fullgraph=True)` works.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        mlp_type: MLPType = "gelu",
        qk_norm: bool = True,
        shared: bool = False,
        attn_backend: AttnBackend = "auto",
        text_pre_only: bool = False,
    ) -> None:
        super().__init__()
        self.shared = shared
        self.attn_backend = attn_backend
        # The attention over the joint sequence; sora.training.parallel swaps in Ulysses' all-to-all version.
        self.attention_fn = attention
        n = 1 if shared else len(STREAMS)
        self.layers = nn.ModuleList(
            StreamLayer(
                hidden_size,
                num_heads,
                mlp_ratio,
                mlp_type,
                qk_norm,
                pre_only=text_pre_only and not shared and i == STREAMS.index("text"),
            )
            for i in range(n)
        )

    def forward(
        self, xs: list[Tensor], conds: list[Tensor], cos: Tensor, sin: Tensor, key_padding_mask: Tensor
    ) -> list[Tensor]:
        """xs: streams in the order [text, video(, audio)], each (B, N_s, D); conds: their adaLN conditioning,
        each (B, G_s, D) with N_s a multiple of G_s; cos, sin (B or 1, 1, N, D/H/2) for the concatenated
        sequence of N = sum(N_s) tokens; key_padding_mask (B, N) bool. Returns the updated streams."""
        layers = [self.layers[0 if self.shared else i] for i in range(len(xs))]
        mods = [layer.modulation(c) for layer, c in zip(layers, conds)]  # each 6 x (B, G_s, D)
        heads = [layer.qkv_heads(x, m[0], m[1]) for layer, x, m in zip(layers, xs, mods)]
        q = apply_rope(torch.cat([h[0] for h in heads], dim=2), cos, sin)  # (B, H, N, Dh)
        k = apply_rope(torch.cat([h[1] for h in heads], dim=2), cos, sin)  # (B, H, N, Dh)
        v = torch.cat([h[2] for h in heads], dim=2)  # (B, H, N, Dh)
        out = self.attention_fn(q, k, v, key_padding_mask, self.attn_backend)  # (B, H, N, Dh)
        out = rearrange(out, "b h n d -> b n (h d)")
        outs = out.split([x.shape[1] for x in xs], dim=1)  # each (B, N_s, D)
        return [layer.finish(x, o, m) for layer, x, o, m in zip(layers, xs, outs, mods)]


class FinalLayer(nn.Module):
    """adaLN-modulated norm, then a linear map to patch values; zero-initialised (`AVDiT._init_weights`)."""

    def __init__(self, hidden_size: int, out_dim: int) -> None:
        super().__init__()
        self.norm = layer_norm(hidden_size)
        self.modulation = AdaLNModulation(hidden_size, hidden_size, 2)
        self.linear = nn.Linear(hidden_size, out_dim)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x (B, N, D), cond (B, G, D) -> (B, N, out_dim)."""
        shift, scale = self.modulation(cond)
        return self.linear(modulate(self.norm(x), shift, scale))


def dit_flops_per_token(
    *,
    hidden_size: int,
    depth: int,
    seq_len: int,
    mlp_ratio: float = 4.0,
    mlp_type: MLPType = "gelu",
    training: bool = False,
) -> float:
    """Model FLOPs for one token through the transformer blocks, attending over `seq_len` tokens.

    Per block and token, forward: `2 * (4 D^2 + P_mlp)` for the matmuls (QKV 3 D^2, output projection D^2, MLP
    P_mlp = 2 D F for GELU or 3 D F for SwiGLU with hidden width F) plus `4 * S * D` for q k^T and attn @ v
    over S = `seq_len` tokens. Forward only by default; `training=True` counts forward + backward = 3x forward
    (the usual 6N + 12 L D S rule; recomputation from activation checkpointing is not counted, as in MFU).
    Not counted: adaLN modulation (computed per frame or per sample), norms, activations, RoPE, patch/text
    embeddings and final layer.
    """
    d = hidden_size
    hidden = int(d * mlp_ratio)
    mlp_params = 3 * d * swiglu_hidden_dim(hidden) if mlp_type == "swiglu" else 2 * d * hidden
    forward = depth * (2 * (4 * d * d + mlp_params) + 4 * seq_len * d)
    return float(3 * forward if training else forward)


def estimate_flops(
    *,
    hidden_size: int,
    depth: int,
    num_video_tokens: int,
    num_audio_tokens: int = 0,
    num_text_tokens: int = 0,
    mlp_ratio: float = 4.0,
    mlp_type: MLPType = "gelu",
    training: bool = False,
) -> float:
    """Model FLOPs for one sample: every text, video and audio token goes through one stream's weights in
    every block and attends over all of them (see `dit_flops_per_token`)."""
    n = num_video_tokens + num_audio_tokens + num_text_tokens
    per_token = dit_flops_per_token(
        hidden_size=hidden_size,
        depth=depth,
        seq_len=n,
        mlp_ratio=mlp_ratio,
        mlp_type=mlp_type,
        training=training,
    )
    return n * per_token


def _as_seconds(value: float | Tensor, batch: int, device: torch.device, name: str) -> Tensor:
    """A frame duration in seconds as a float32 tensor of shape (1,) or (B,)."""
    sec = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if sec.numel() not in (1, batch):
        raise ValueError(
            f"{name} must be a float or a tensor with 1 or B={batch} values, got {tuple(sec.shape)}"
        )
    return sec


@dataclass
class AVDiTConfig:
    """The architecture of an :class:`AVDiT` (``conf/model/dit/*.yaml`` hold these fields, sizes as data).

    ``patch_size`` (time, height, width) latent cells per video token; ``audio_patch_size`` audio latent
    frames per audio token; ``single_stream_depth``: the last blocks share one set of weights over
    [text, video, audio]; ``rope_axes``: RoPE dims per (time, height, width) axis, None = split ``head_dim``.
    ``spatial_embedding``: add a fixed sine-cosine embedding of each video token's place in the frame
    (:func:`sora.models.layers.spatial_sincos_embedding`) to its patch embedding (DiT / SD3 style), on top of
    RoPE. Off by default: on the quickstart (1000 text-to-image steps on short captions) swapping "left" and
    "right" in the captions raised the loss by 6% with RoPE alone and by 2% with the embedding, so RoPE's
    angle to the text tokens at the origin already tells a token where it is (measured 2026-12-02, one run
    each).
    Activation checkpointing is not part of the architecture: :mod:`sora.training.parallel` applies it.
    """

    hidden_size: int
    depth: int
    num_heads: int
    text_dim: int
    video_channels: int = 16
    audio_channels: int = 8
    patch_size: tuple[int, int, int] = (1, 2, 2)
    audio_patch_size: int = 1
    single_stream_depth: int = 0
    mlp_ratio: float = 4.0
    mlp_type: MLPType = "gelu"
    qk_norm: bool = True
    attn_backend: AttnBackend = "auto"
    rope_time_scale: float = 25.0
    rope_theta: float = 10000.0
    rope_axes: tuple[int, int, int] | None = None
    freq_dim: int = 256
    spatial_embedding: bool = False

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1 or self.audio_patch_size < 1:
            raise ValueError(
                f"patch_size must be 3 positive ints and audio_patch_size >= 1, got {self.patch_size}, "
                f"{self.audio_patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
        if not 0 <= self.single_stream_depth <= self.depth:
            raise ValueError(
                f"single_stream_depth must be in [0, depth={self.depth}], got {self.single_stream_depth}"
            )
        head_dim = self.hidden_size // self.num_heads
        axes = self.rope_axes
        self.rope_axes = tuple(int(a) for a in axes) if axes is not None else rope_axes_dims(head_dim)
        if sum(self.rope_axes) != head_dim or len(self.rope_axes) != 3:
            raise ValueError(
                f"rope_axes {self.rope_axes} must be 3 even numbers summing to head_dim {head_dim}"
            )

    def to_dict(self) -> dict:
        """Plain keyword arguments that rebuild the same architecture (``AVDiT(**config.to_dict())``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


class AVDiT(nn.Module):
    """Joint audio+video diffusion transformer predicting rectified-flow velocities (see module docstring).

    Built from an :class:`AVDiTConfig` or from its fields as keyword arguments (what Hydra's ``_target_`` and
    checkpoints pass): ``AVDiT(hidden_size=64, depth=2, num_heads=2, text_dim=64)``.
    """

    def __init__(self, config: AVDiTConfig | None = None, /, **kwargs: Any) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise ValueError(f"give an AVDiTConfig or keyword arguments, not both (got {sorted(kwargs)})")
        cfg = config if config is not None else AVDiTConfig(**kwargs)
        self.config = cfg.to_dict()
        for f in fields(cfg):  # self.hidden_size, self.patch_size, ...
            setattr(self, f.name, getattr(cfg, f.name))
        hidden_size, depth, num_heads, text_dim = cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.text_dim
        video_channels, audio_channels, patch_size = cfg.video_channels, cfg.audio_channels, cfg.patch_size
        # Set by sora.training.parallel for sequence parallelism: shards the token streams after embedding
        # and gathers them before the final layers (None: one process holds the whole sequence).
        self.sequence_parallel = None

        video_patch_dim = video_channels * patch_size[0] * patch_size[1] * patch_size[2]
        audio_patch_dim = audio_channels * cfg.audio_patch_size
        self.video_embed = nn.Linear(video_patch_dim, hidden_size)
        self.audio_embed = nn.Linear(audio_patch_dim, hidden_size)
        self.text_embed = nn.Sequential(
            nn.Linear(text_dim, hidden_size), nn.GELU(approximate="tanh"), nn.Linear(hidden_size, hidden_size)
        )
        self.text_pool = nn.Sequential(
            nn.Linear(text_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.t_embedder = TimestepEmbedder(hidden_size, cfg.freq_dim)
        # Learned "no caption" embedding for classifier-free guidance: a dropped sample's text becomes this
        # one token.
        self.null_text = nn.Parameter(torch.randn(text_dim) * text_dim**-0.5)
        self.blocks = nn.ModuleList(
            AVDiTBlock(
                hidden_size,
                num_heads,
                cfg.mlp_ratio,
                cfg.mlp_type,
                cfg.qk_norm,
                shared=i >= depth - cfg.single_stream_depth,
                attn_backend=cfg.attn_backend,
                text_pre_only=i == depth - 1,  # the last block's text output is never read
            )
            for i in range(depth)
        )
        self.final_video = FinalLayer(hidden_size, video_patch_dim)
        self.final_audio = FinalLayer(hidden_size, audio_patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier-uniform linears and zero biases (DiT, following ViT).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Small normal init for the timestep MLP (DiT): the conditioning starts small but informative.
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        # adaLN-zero (DiT paper): zero every modulation, so all gates are 0 and each block starts as the
        # identity map; the deep net then trains stably from step 0. Zero the final projection too, so a fresh
        # model predicts exactly 0 velocity and the first gradients go to the output layer, then flow inwards.
        for module in self.modules():
            if isinstance(module, AdaLNModulation):
                nn.init.zeros_(module.linear.weight)
                nn.init.zeros_(module.linear.bias)
        for final in (self.final_video, self.final_audio):
            nn.init.zeros_(final.linear.weight)
            nn.init.zeros_(final.linear.bias)

    # ------------------------------------------------------------------------------------------------------
    # Helpers: tokens, timesteps, positions
    # ------------------------------------------------------------------------------------------------------

    def video_grid(self, video_shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a video latent of shape (B, C, T, H, W); ValueError if not divisible."""
        if len(video_shape) != 5 or video_shape[1] != self.video_channels:
            raise ValueError(f"video must be (B, {self.video_channels}, T, H, W), got {tuple(video_shape)}")
        grid = []
        for size, p, name in zip(video_shape[2:], self.patch_size, ("frames T", "height H", "width W")):
            if size % p:
                raise ValueError(
                    f"video latent {name}={size} is not divisible by the patch size {p} "
                    f"(patch_size={self.patch_size}); crop or pad the latents"
                )
            grid.append(size // p)
        return tuple(grid)

    def num_tokens(
        self, video_shape: tuple[int, ...], audio_shape: tuple[int, ...] | None = None
    ) -> tuple[int, int]:
        """Numbers of video and audio tokens for latents of these shapes."""
        t, h, w = self.video_grid(video_shape)
        return t * h * w, 0 if audio_shape is None else audio_shape[-1] // self.audio_patch_size

    def estimate_flops(
        self,
        video_shape: tuple[int, ...],
        audio_shape: tuple[int, ...] | None = None,
        num_text_tokens: int = 0,
        training: bool = False,
    ) -> float:
        """Model FLOPs for a batch with these latent shapes: forward only, or forward + backward with
        `training=True` (see `dit_flops_per_token`)."""
        nv, na = self.num_tokens(video_shape, audio_shape)
        return video_shape[0] * estimate_flops(
            hidden_size=self.hidden_size,
            depth=self.depth,
            num_video_tokens=nv,
            num_audio_tokens=na,
            num_text_tokens=num_text_tokens,
            mlp_ratio=self.mlp_ratio,
            mlp_type=self.mlp_type,
            training=training,
        )

    def _video_timesteps(self, t: Tensor, shape: torch.Size) -> Tensor:
        """t (B,), (B, T), (B, T, H, W) on the latent grid or (B, T', H', W') on the token grid -> (B, G)
        with G in {1, T', N}: one timestep per group of contiguous tokens. Values within a patch are averaged
        (callers should keep t constant within a patch)."""
        B, _, T, H, W = shape
        pt, ph, pw = self.patch_size
        t = t.float()
        if t.shape == (B,):
            return t[:, None]
        if t.shape == (B, T):
            return t.unflatten(1, (T // pt, pt)).mean(-1)  # (B, T')
        if t.shape == (B, T, H, W):
            return rearrange(t, "b (t p) (h q) (w r) -> b (t h w) (p q r)", p=pt, q=ph, r=pw).mean(-1)
        if t.shape == (B, T // pt, H // ph, W // pw):
            return t.flatten(1)  # (B, N)
        raise ValueError(
            f"t_video must be (B,), (B, T), (B, T, H, W) or the token grid for video {tuple(shape)}; "
            f"got {tuple(t.shape)}"
        )

    def _audio_timesteps(self, t: Tensor | None, shape: torch.Size) -> Tensor:
        """t (B,), (B, L) or (B, L') -> (B, G), G in {1, L'}."""
        B, _, L = shape
        if t is None:
            raise ValueError("t_audio is required when audio is given")
        t = t.float()
        if t.shape == (B,):
            return t[:, None]
        if t.shape == (B, L):
            return t.unflatten(1, (L // self.audio_patch_size, self.audio_patch_size)).mean(-1)
        if t.shape == (B, L // self.audio_patch_size):
            return t
        raise ValueError(f"t_audio must be (B,) or (B, L) for audio {tuple(shape)}; got {tuple(t.shape)}")

    def _video_positions(self, grid: tuple[int, int, int], seconds: Tensor) -> Tensor:
        """RoPE positions (Bs, T'H'W', 3): (seconds * rope_time_scale, centred row, centred column)."""
        T, H, W = grid
        pt = self.patch_size[0]
        dev = seconds.device
        frame = (
            torch.arange(T, device=dev, dtype=torch.float32) * pt + (pt - 1) / 2
        )  # latent frame of the patch
        time = frame[None] * seconds[:, None] * self.rope_time_scale  # (Bs, T')
        rows = torch.arange(H, device=dev, dtype=torch.float32) - (H - 1) / 2
        cols = torch.arange(W, device=dev, dtype=torch.float32) - (W - 1) / 2
        pos = torch.stack(
            torch.broadcast_tensors(
                time[:, :, None, None], rows[None, None, :, None], cols[None, None, None, :]
            ),
            dim=-1,
        )
        return rearrange(pos, "b t h w a -> b (t h w) a")

    def _audio_positions(self, length: int, seconds: Tensor) -> Tensor:
        """RoPE positions (Bs, L', 3) = (time in seconds * rope_time_scale, 0, 0)."""
        pa = self.audio_patch_size
        frame = torch.arange(length, device=seconds.device, dtype=torch.float32) * pa + (pa - 1) / 2
        time = frame[None] * seconds[:, None] * self.rope_time_scale  # (Bs, L')
        return torch.stack([time, torch.zeros_like(time), torch.zeros_like(time)], dim=-1)

    def null_text_condition(self, batch_size: int, num_tokens: int = 1) -> tuple[Tensor, Tensor]:
        """The unconditional text input: null embeddings (B, num_tokens, text_dim), mask True at token 0."""
        emb = self.null_text.expand(batch_size, num_tokens, -1)
        mask = torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=emb.device)
        mask[:, 0] = True
        return emb, mask

    # ------------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------------

    def forward(
        self,
        video: Tensor,
        audio: Tensor | None,
        t_video: Tensor,
        t_audio: Tensor | None,
        text: Tensor,
        text_mask: Tensor,
        *,
        video_frame_seconds: float | Tensor,
        audio_frame_seconds: float | Tensor = 1 / 25,
        drop_text: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Velocity predictions for noisy video (and audio) latents.

        video (B, Cv, T, H, W); audio (B, Ca, L) or None for video only; t_video (B,), (B, T), (B, T, H, W);
        t_audio (B,) or (B, L) (None when audio is None); text (B, N, text_dim); text_mask (B, N) bool, True =
        real token; video_frame_seconds / audio_frame_seconds: seconds per latent frame, float or (B,);
        drop_text (B,) bool: use the learned null text for these samples (classifier-free guidance).
        Returns (video velocity (B, Cv, T, H, W), audio velocity (B, Ca, L) or None).
        """
        B = video.shape[0]
        grid = self.video_grid(video.shape)
        if audio is not None and (
            audio.ndim != 3
            or audio.shape[:2] != (B, self.audio_channels)
            or audio.shape[2] % self.audio_patch_size
        ):
            raise ValueError(
                f"audio must be (B={B}, {self.audio_channels}, L) with L divisible by "
                f"audio_patch_size={self.audio_patch_size}, got {tuple(audio.shape)}"
            )
        if audio is None and t_audio is not None:
            raise ValueError("t_audio was given without audio")
        if text.ndim != 3 or text.shape[0] != B or text.shape[2] != self.text_dim:
            raise ValueError(f"text must be (B={B}, N, text_dim={self.text_dim}), got {tuple(text.shape)}")
        if text_mask.shape != text.shape[:2]:
            raise ValueError(f"text_mask must be {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
        text_mask = text_mask.bool()
        if drop_text is not None:
            if drop_text.shape != (B,):
                raise ValueError(f"drop_text must be (B={B},) bool, got {tuple(drop_text.shape)}")
            null_emb, null_mask = self.null_text_condition(B, text.shape[1])
            drop = drop_text.bool().to(text.device)
            text = torch.where(drop[:, None, None], null_emb.to(text.dtype), text)
            text_mask = torch.where(drop[:, None], null_mask, text_mask)

        # Pooled caption vector, added to every token's timestep embedding.
        m = text_mask[..., None].to(text.dtype)  # (B, N, 1)
        pooled = (text * m).sum(1) / m.sum(1).clamp(min=1)  # (B, text_dim)
        pooled = self.text_pool(pooled)[:, None]  # (B, 1, D)

        # Tokens. Each stream's conditioning has one row per group of contiguous tokens.
        xs = [self.text_embed(text)]  # [(B, N_txt, D)]
        pt, ph, pw = self.patch_size
        patches = rearrange(video, "b c (t p) (h q) (w r) -> b (t h w) (c p q r)", p=pt, q=ph, r=pw)
        video_tokens = self.video_embed(patches)  # (B, Nv, D)
        if self.spatial_embedding:  # the same (H'W', D) place vector on every latent frame
            T, H, W = grid
            place = spatial_sincos_embedding(H, W, self.hidden_size, video.device).to(video_tokens.dtype)
            video_tokens = video_tokens + place.repeat(T, 1)[None]  # (1, T'H'W', D) t-major
        xs.append(video_tokens)  # (B, Nv, D)
        tv = self._video_timesteps(t_video, video.shape)  # (B, Gv)
        conds = [None, self.t_embedder(tv) + pooled]  # video: (B, Gv, D)
        t_max = tv.amax(1)  # (B,) the noisiest token: the text stream's timestep
        v_sec = _as_seconds(video_frame_seconds, B, video.device, "video_frame_seconds")
        positions = [self._video_positions(grid, v_sec)]  # [(Bs, Nv, 3)]
        if audio is not None:
            xs.append(self.audio_embed(rearrange(audio, "b c (l p) -> b l (c p)", p=self.audio_patch_size)))
            ta = self._audio_timesteps(t_audio, audio.shape)  # (B, Ga)
            conds.append(self.t_embedder(ta) + pooled)  # (B, Ga, D)
            t_max = torch.maximum(t_max, ta.amax(1))
            a_sec = _as_seconds(audio_frame_seconds, B, video.device, "audio_frame_seconds")
            positions.append(self._audio_positions(xs[-1].shape[1], a_sec))  # (Bs, Na, 3)
        conds[0] = self.t_embedder(t_max)[:, None] + pooled  # text: (B, 1, D)

        # RoPE over [text (origin), video, audio]; text padding is masked out of every key.
        bs = max(p.shape[0] for p in positions)
        positions = [text.new_zeros(1, text.shape[1], 3, dtype=torch.float32)] + positions
        positions = torch.cat([p.expand(bs, -1, -1) for p in positions], dim=1)  # (Bs, N, 3)
        cos, sin = rope_cos_sin(positions, self.rope_axes, self.rope_theta)  # (Bs, N, Dh/2)
        cos, sin = cos[:, None], sin[:, None]  # (Bs, 1, N, Dh/2)
        n_av = sum(x.shape[1] for x in xs[1:])
        key_mask = torch.cat([text_mask, text_mask.new_ones(B, n_av)], dim=1)  # (B, N)

        sp = self.sequence_parallel
        if sp is not None:  # local token slices; key_mask becomes the full mask in all-to-all order
            xs, conds, cos, sin, key_mask, lengths = sp.shard(xs, conds, cos, sin, key_mask)
        for block in self.blocks:
            xs = block(xs, conds, cos, sin, key_mask)

        outs = [self.final_video(xs[1], conds[1])]  # (B, Nv, Cv*pt*ph*pw)
        if audio is not None:
            outs.append(self.final_audio(xs[2], conds[2]))  # (B, La, Ca*pa)
        if sp is not None:
            outs = sp.gather(outs, lengths[1:])  # whole streams
        T, H, W = grid
        out_v = rearrange(
            outs[0], "b (t h w) (c p q r) -> b c (t p) (h q) (w r)", t=T, h=H, w=W, p=pt, q=ph, r=pw
        )
        out_a = None
        if audio is not None:
            out_a = rearrange(outs[1], "b l (c p) -> b c (l p)", p=self.audio_patch_size)
        return out_v, out_a
