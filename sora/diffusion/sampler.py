"""ODE samplers for rectified flow with per-token conditioning and classifier-free guidance.

Time runs from ``t = 1`` (pure noise) to ``t = 0`` (data); the network predicts the velocity ``noise - x0``
so one Euler step is ``x <- x + (t_next - t) * v``. Every generation mode is the same loop:

- tokens given as conditions (a clean first frame for image-to-video, a clean prefix for extension, a whole
  clean modality for video-to-audio / audio-to-video) are held at their clean values with ``t = 0``;
- remix (SDEdit) starts the loop at ``t = strength`` from the source noised to that level;
- clips longer than the model's window are generated in rolling windows (:func:`rolling_windows`): each
  window holds the last latent frames of what exists so far as clean context and generates the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sora.diffusion.flow import shift_timesteps

# denoise(video_t, audio_t, t_video (B,T), t_audio (B,L)) -> (velocity_video, velocity_audio)
Denoiser = Callable[[Tensor, Tensor | None, Tensor, Tensor | None], tuple[Tensor, Tensor | None]]


@dataclass
class Condition:
    """Clean values and masks for one modality: ``mask`` is (B, T) bool over latent frames (True = given).

    ``clean`` has the latent's shape; only its masked frames are read.
    """

    clean: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool or self.mask.shape != (self.clean.shape[0], self.clean.shape[2]):
            raise ValueError(
                f"condition mask must be bool (B, T) = {(self.clean.shape[0], self.clean.shape[2])}, "
                f"got {self.mask.dtype} {tuple(self.mask.shape)}"
            )

    def apply(self, x: Tensor) -> Tensor:
        """Replace the conditioned frames of ``x`` by their clean values."""
        m = self.mask.view(*self.mask.shape[:2], *([1] * (x.ndim - 3))).unsqueeze(1)  # (B, 1, T, 1...)
        return torch.where(m, self.clean.to(x.dtype), x)

    def timesteps(self, t: float, like: Tensor) -> Tensor:
        """(B, T) timesteps: ``t`` for generated frames, 0 for given ones."""
        return torch.where(
            self.mask, torch.zeros((), device=like.device), torch.full_like(self.mask, t, dtype=like.dtype)
        )


@dataclass(frozen=True)
class Window:
    """One rolling window over a clip's latent frames: it starts at latent frame ``start``, holds ``context``
    frames that already exist as clean context and generates the ``new`` frames after them."""

    start: int
    context: int
    new: int

    @property
    def length(self) -> int:
        return self.context + self.new


def rolling_windows(existing: int, new: int, window: int, context: int) -> list[Window]:
    """Windows that add ``new`` latent frames to a clip of ``existing`` latent frames, ``window`` frames at a
    time (the model's trained length), each keeping the last ``min(context, frames so far)`` frames clean.

    The first window of a clip with fewer than ``context`` frames keeps all of them (none for text-to-video);
    every window generates ``window - context`` frames except a shorter last one, so there are
    ``ceil((new - first) / (window - context))`` windows after the first.
    """
    if window < 2:
        raise ValueError(f"a rolling window needs at least 2 latent frames, got {window}")
    if not 1 <= context < window:
        raise ValueError(
            f"context must be in [1, window - 1] = [1, {window - 1}] latent frames, got {context}"
        )
    if existing < 0 or new < 0:
        raise ValueError(f"existing and new latent frames must be >= 0, got {existing} and {new}")
    out, n, left = [], existing, new
    while left > 0:
        ctx = min(context, n)
        gen = min(window - ctx, left)
        out.append(Window(n - ctx, ctx, gen))
        n, left = n + gen, left - gen
    return out


def sigma_schedule(num_steps: int, *, shift: float = 1.0, start: float = 1.0, device=None) -> Tensor:
    """``num_steps + 1`` decreasing times from ``start`` to 0, warped by the SD3 shift (more steps at high
    noise)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 < start <= 1.0:
        raise ValueError(f"start (remix strength) must be in (0, 1], got {start}")
    t = torch.linspace(1.0, 0.0, num_steps + 1, device=device, dtype=torch.float64)
    t = shift_timesteps(t, shift)
    if start < 1.0:  # remix: the same warped grid, rescaled to end at `start`
        t = t * start
    return t.float()


def _frame_t(t: float, x: Tensor, cond: Condition | None) -> Tensor:
    if cond is not None:
        return cond.timesteps(t, x)
    return torch.full((x.shape[0], x.shape[2]), t, device=x.device, dtype=x.dtype)


@torch.no_grad()
def sample(
    denoise: Denoiser,
    video: Tensor,
    audio: Tensor | None,
    sigmas: Tensor,
    *,
    video_cond: Condition | None = None,
    audio_cond: Condition | None = None,
    solver: str = "euler",
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Integrate the flow ODE from ``sigmas[0]`` to ``sigmas[-1]``.

    ``video`` (B, C, T, H, W) and ``audio`` (B, C, L) hold the starting point: pure noise for t2av, or the
    source noised to ``sigmas[0]`` for remix. ``solver``: ``euler`` (1 network call a step) or ``heun``
    (2nd order, 2 calls a step except the last). Returns the final latents (conditioned frames exact).
    """
    if solver not in ("euler", "heun"):
        raise ValueError(f"solver must be 'euler' or 'heun', got {solver!r}")

    def with_conditions(xv: Tensor, xa: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if video_cond is not None:
            xv = video_cond.apply(xv)
        if audio_cond is not None and xa is not None:
            xa = audio_cond.apply(xa)
        return xv, xa

    def velocity(xv: Tensor, xa: Tensor | None, t: float) -> tuple[Tensor, Tensor | None]:
        tv = _frame_t(t, xv, video_cond)
        ta = _frame_t(t, xa, audio_cond) if xa is not None else None
        return denoise(xv, xa, tv, ta)

    xv, xa = with_conditions(video, audio)
    times = sigmas.tolist()
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        dt = t_next - t
        vv, va = velocity(xv, xa, t)
        pv = xv + dt * vv
        pa = xa + dt * va if xa is not None else None
        if solver == "heun" and t_next > 0:
            pv, pa = with_conditions(pv, pa)
            vv2, va2 = velocity(pv, pa, t_next)
            pv = xv + dt * 0.5 * (vv + vv2)
            pa = xa + dt * 0.5 * (va + va2) if xa is not None else None
        xv, xa = with_conditions(pv, pa)
        if progress is not None:
            progress(i)
    return xv, xa


def guided(
    model_call: Callable[..., tuple[Tensor, Tensor | None]],
    *,
    video_scale: float,
    audio_scale: float,
    batch_cfg: bool = True,
) -> Denoiser:
    """Wrap ``model_call(xv, xa, tv, ta, drop_text)`` with classifier-free guidance.

    ``v = v_uncond + scale * (v_cond - v_uncond)`` with separate scales for video and audio (sound usually
    wants less guidance). ``batch_cfg`` runs the conditional and unconditional passes as one doubled batch
    (one launch, better GPU utilisation); a scale of 1 for both skips the unconditional pass entirely.
    """

    def denoise(xv: Tensor, xa: Tensor | None, tv: Tensor, ta: Tensor | None) -> tuple[Tensor, Tensor | None]:
        b = xv.shape[0]
        keep = torch.zeros(b, dtype=torch.bool, device=xv.device)
        if video_scale == 1.0 and audio_scale == 1.0:
            return model_call(xv, xa, tv, ta, keep)
        if batch_cfg:
            cat = lambda x: None if x is None else torch.cat([x, x])  # noqa: E731
            drop = torch.cat([keep, ~keep])
            v2, a2 = model_call(cat(xv), cat(xa), cat(tv), cat(ta), drop)
            vc, vu = v2.chunk(2)
            ac, au = a2.chunk(2) if a2 is not None else (None, None)
        else:
            vc, ac = model_call(xv, xa, tv, ta, keep)
            vu, au = model_call(xv, xa, tv, ta, ~keep)
        v = vu + video_scale * (vc - vu)
        a = au + audio_scale * (ac - au) if ac is not None else None
        return v, a

    return denoise
