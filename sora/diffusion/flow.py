"""Rectified-flow math: noising, velocity targets, timestep sampling and shift, the masked loss, and the
conditioning curriculum (which frames are clean conditions and which are generated). Pure tensor functions.

Convention: `x_t = (1 - t) x_0 + t * noise`, t = 0 is clean data and t = 1 pure noise; the network predicts
the velocity `dx_t/dt = noise - x_0`. Timesteps may be per sample (B,), per latent frame (B, T) or per
position (B, T, H, W) for video latents (B, C, T, H, W) and (B,) or (B, L) for audio latents (B, C, L).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

MODES = ("t2av", "i2v", "extend", "v2a", "a2v")
NEEDS_AUDIO = ("v2a", "a2v")
DEFAULT_MODE_PROBS = {"t2av": 0.6, "i2v": 0.15, "extend": 0.1, "v2a": 0.075, "a2v": 0.075}


def expand_t(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast timesteps (or a mask) over a latent: t (B,) or (B, *x.shape[2:2+k]) -> (B, 1, ..., 1)
    viewable against x (B, C, ...). Raises ValueError when t does not match x's leading non-channel dims."""
    if t.ndim == 0 or t.shape[0] != x.shape[0] or tuple(t.shape[1:]) != tuple(x.shape[2 : 1 + t.ndim]):
        raise ValueError(
            f"t of shape {tuple(t.shape)} does not match latents {tuple(x.shape)}: expected (B,) or "
            f"(B, *dims after the channel dim), e.g. {(x.shape[0], *x.shape[2:])}"
        )
    t = t.unsqueeze(1)  # (B, 1, ...)
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def add_noise(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """`x_t = (1 - t) x0 + t noise`; x0, noise (B, C, ...), t per sample/frame/position (see `expand_t`)."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
    t = expand_t(t, x0).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The rectified-flow velocity `noise - x0` the network learns to predict."""
    return noise - x0


def sample_logit_normal(
    shape: tuple[int, ...] | int,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Logit-normal timesteps `sigmoid(mean + std * n)`, n ~ N(0, 1) (SD3, Esser et al. 2024): more samples at
    mid-range t, where the velocity is hardest to predict. Values lie strictly in (0, 1)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if generator is not None and device is None:
        device = generator.device
    n = torch.randn(shape, generator=generator, device=device)
    return torch.sigmoid(mean + std * n)


def shift_timesteps(t: Tensor, shift: float | Tensor) -> Tensor:
    """SD3 timestep shift `t' = shift t / (1 + (shift - 1) t)`: shift > 1 moves mass towards noise (t = 1).

    Monotone increasing in t for shift > 0, with fixed points t = 0 and t = 1.
    """
    if isinstance(shift, (int, float)) and shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def token_count_shift(
    num_tokens: int | float,
    base_tokens: int = 256,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    max_tokens: int = 4096,
    exponential: bool = True,
) -> float:
    """Timestep shift that grows with the number of tokens: more tokens carry more redundant signal, so more
    noise is needed to destroy it and training/sampling should spend more time near t = 1.

    Linear interpolation (extrapolated outside the range) through (base_tokens, base_shift) and
    (max_tokens, max_shift):
    `y = base_shift + (max_shift - base_shift) (n - base_tokens) / (max_tokens - base_tokens)`.
    - `exponential=True` (Flux, black-forest-labs/flux `sampling.py`: `get_lin_function` + `time_shift`): y is
      mu and the shift is `exp(mu)`; defaults are Flux's (256 -> 0.5, 4096 -> 1.15), giving 1.65 .. 3.16.
    - `exponential=False` (Open-Sora 2.0, hpcaitech/Open-Sora `get_res_lin_function`, 256 -> 1, 4096 -> 3):
      y is the shift itself (Open-Sora further multiplies it by sqrt(num_frames) for video; do that outside).
    Use the result with `shift_timesteps`.
    """
    if max_tokens == base_tokens:
        raise ValueError("max_tokens must differ from base_tokens")
    y = base_shift + (max_shift - base_shift) * (num_tokens - base_tokens) / (max_tokens - base_tokens)
    if exponential:
        return math.exp(y)
    if y <= 0:
        raise ValueError(f"linear shift rule gave a non-positive shift {y} for {num_tokens} tokens")
    return y


def audio_prefix_mask(
    num_clean_latents: Tensor,
    num_audio_frames: int,
    video_frame_seconds: float,
    audio_frame_seconds: float,
    video_temporal_compression: int = 4,
) -> Tensor:
    """Which audio latents belong to a clean video prefix of ``num_clean_latents`` (B,) latent frames:
    (B, L) bool.

    Causal VAE: k clean latent frames hold pixel frames 0 .. c (k - 1) (c = temporal compression), i.e. the
    first (k - 1) * fs + fs / c seconds (fs = seconds per latent frame). Audio latent j starts at
    j * audio_frame_seconds and is part of the prefix when it starts inside it. Training (`extend` in the
    curriculum) and sampling (`extend` in sora.pipeline) both use this rule.
    """
    dev = num_clean_latents.device
    audio_start = torch.arange(num_audio_frames, device=dev)[None] * audio_frame_seconds  # (1, L)
    prefix_end = (
        num_clean_latents[:, None] - 1 + 1 / video_temporal_compression
    ) * video_frame_seconds  # (B, 1)
    return audio_start < prefix_end - 1e-9


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of squared errors over masked-in positions and their element count. mask (B,) or (B, ...) bool."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    keep = expand_t(mask.bool(), pred).expand_as(pred)  # (B, C, ...)
    se = (pred.float() - target.float()).square()
    # where, not multiply: a masked position cannot leak into the loss even if its prediction is inf/NaN.
    total = torch.where(keep, se, torch.zeros_like(se)).sum()
    return total, keep.sum()


def flow_loss(
    pred: Mapping[str, Tensor | None],
    target: Mapping[str, Tensor | None],
    loss_mask: Mapping[str, Tensor | None],
    weights: Mapping[str, float] | None = None,
) -> dict[str, Tensor]:
    """MSE over generated tokens only, per modality, combined with modality weights.

    pred, target: {"video": (B, C, T, H, W), "audio": (B, C, L) or None, ...}; loss_mask: per modality
    (B,), (B, T) / (B, L) or per position, bool, True = generated (loss counted); clean conditioning tokens
    and clips without audio are False. Each modality's loss is the mean squared error over its generated
    elements in the whole batch, or exactly 0 when it has none (no NaN). Returns {"loss": sum_m w_m loss_m,
    "loss_<m>": ..., "tokens_<m>": number of generated elements (float)}.
    """
    weights = dict(weights or {})
    device = next(p for p in pred.values() if p is not None).device
    out: dict[str, Tensor] = {}
    total = torch.zeros((), device=device)
    for name, p in pred.items():
        if p is None:
            continue
        if target.get(name) is None or loss_mask.get(name) is None:
            raise ValueError(f"modality {name!r} has a prediction but no target or loss_mask")
        sse, count = _masked_mse(p, target[name], loss_mask[name])
        loss = sse / count.clamp(min=1)
        out[f"loss_{name}"] = loss
        out[f"tokens_{name}"] = count.float()
        total = total + weights.get(name, 1.0) * loss
    out["loss"] = total
    return out


@dataclass
class Conditioning:
    """Per-sample conditioning for one training batch.

    mode (B,) long index into MODES; t_video (B, T) and t_audio (B, L) per latent frame (0 on clean frames);
    video_loss_mask (B, T), audio_loss_mask (B, L) bool (True = generated, loss counted); drop_text (B,) bool.
    """

    mode: Tensor
    t_video: Tensor
    t_audio: Tensor
    video_loss_mask: Tensor
    audio_loss_mask: Tensor
    drop_text: Tensor


class ConditioningCurriculum:
    """Samples a conditioning mode per sample and builds per-frame timesteps and loss masks.

    Modes: `t2av` everything generated; `i2v` first video latent frame clean; `extend` a clean video prefix
    of random length (1 .. T-1 latent frames) with the audio of the same seconds clean (causal-VAE timing);
    `v2a` video clean, audio generated; `a2v` audio clean, video generated. Clips without audio (`has_audio`
    False) never draw v2a/a2v and get an all-False audio loss mask. Captions are dropped (null text, for CFG)
    with probability `caption_dropout`.
    """

    def __init__(self, mode_probs: Mapping[str, float] | None = None, caption_dropout: float = 0.1) -> None:
        mode_probs = dict(mode_probs if mode_probs is not None else DEFAULT_MODE_PROBS)
        unknown = set(mode_probs) - set(MODES)
        if unknown:
            raise ValueError(f"unknown conditioning modes {sorted(unknown)}; known: {MODES}")
        probs = torch.tensor([float(mode_probs.get(m, 0.0)) for m in MODES])
        if (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"mode probabilities must be >= 0 with a positive sum, got {mode_probs}")
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        self.probs = probs / probs.sum()
        self.caption_dropout = caption_dropout

    def sample(
        self,
        t: Tensor,
        num_video_frames: int,
        num_audio_frames: int,
        has_audio: Tensor,
        *,
        video_frame_seconds: float = 4 / 24,
        video_temporal_compression: int = 4,
        audio_frame_seconds: float = 1 / 25,
        t_audio: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Conditioning:
        """t (B,) noise level of the generated parts (t_audio (B,) for audio, default t); has_audio (B,) bool.
        Returns a `Conditioning` on t's device."""
        B, dev = t.shape[0], t.device
        if has_audio.shape != (B,):
            raise ValueError(f"has_audio must be (B={B},), got {tuple(has_audio.shape)}")
        gen_dev = generator.device if generator is not None else torch.device("cpu")
        has_audio = has_audio.bool().to(gen_dev)
        probs = self.probs.to(gen_dev).expand(B, -1).clone()  # (B, M)
        needs_audio = torch.tensor([m in NEEDS_AUDIO for m in MODES], device=gen_dev)
        probs[~has_audio[:, None] & needs_audio[None]] = 0.0
        # Only audio modes allowed but the clip has no audio: plain t2av.
        probs[probs.sum(1) == 0, MODES.index("t2av")] = 1.0
        mode = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)
        prefix = torch.randint(1, max(num_video_frames, 2), (B,), generator=generator, device=gen_dev)
        drop_text = torch.rand(B, generator=generator, device=gen_dev) < self.caption_dropout
        mode, prefix, drop_text, has_audio = (x.to(dev) for x in (mode, prefix, drop_text, has_audio))

        is_mode = {m: (mode == i)[:, None] for i, m in enumerate(MODES)}  # each (B, 1)
        frames = torch.arange(num_video_frames, device=dev)[None]  # (1, T)
        prefix = prefix.clamp(max=max(num_video_frames - 1, 0))  # T = 1: no prefix, plain generation
        video_clean = (
            (is_mode["i2v"] & (frames == 0))
            | (is_mode["extend"] & (frames < prefix[:, None]))
            | is_mode["v2a"]
        )  # (B, T)
        audio_prefix = audio_prefix_mask(
            prefix, num_audio_frames, video_frame_seconds, audio_frame_seconds, video_temporal_compression
        )
        audio_clean = (is_mode["extend"] & audio_prefix) | is_mode["a2v"]  # (B, L)

        t_audio = t if t_audio is None else t_audio
        t_video = torch.where(
            video_clean, torch.zeros_like(t)[:, None], t[:, None].expand(-1, num_video_frames)
        )
        t_aud = torch.where(
            audio_clean, torch.zeros_like(t_audio)[:, None], t_audio[:, None].expand(-1, num_audio_frames)
        )
        return Conditioning(
            mode=mode,
            t_video=t_video,
            t_audio=t_aud,
            video_loss_mask=~video_clean,
            audio_loss_mask=~audio_clean & has_audio[:, None],
            drop_text=drop_text,
        )
