"""The one input every per-clip metric takes: :class:`EvalClip`, plus input normalisation helpers.

A runner builds an ``EvalClip`` from a decoded mp4 (:meth:`EvalClip.from_media`), from a model's output tensor
(:func:`as_uint8_video` accepts the DESIGN.md ``(3, T, H, W)`` float layout) or from a synthetic-world clip,
and calls every entry of ``eval.METRICS`` with it. Metrics that need something the clip lacks (sound,
ground-truth metadata, a prompt, a reference clip) raise :class:`MissingInput` with the reason, so a long job
can skip, count and report the clip instead of crashing or silently dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from sora.media import Media


class MissingInput(ValueError):
    """A metric cannot run on this clip because an input it needs is absent (the message says which)."""


def as_uint8_video(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """Normalise a video to uint8 ``(T, H, W, 3)``.

    Accepts uint8 ``(T, H, W, 3)`` arrays/tensors as they are, and float ``(3, T, H, W)`` (DESIGN.md layout)
    or float ``(T, H, W, 3)`` in ``[-1, 1]``, which are mapped to ``[0, 255]`` and rounded.
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu()
        if video.dtype.is_floating_point and video.ndim == 4 and video.shape[0] == 3 and video.shape[-1] != 3:
            video = video.permute(1, 2, 3, 0)  # (3, T, H, W) -> (T, H, W, 3)
        video = video.numpy()
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3) or (3, T, H, W), got {video.shape}")
    if video.dtype == np.uint8:
        return video
    if not np.issubdtype(video.dtype, np.floating):
        raise ValueError(f"video must be uint8 or float in [-1, 1], got {video.dtype}")
    return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def as_mono_audio(audio: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
    """Normalise audio to float32 ``(1, S)`` (channels are averaged; a leading batch dim of 1 is dropped)."""
    if audio is None:
        return None
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 3 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (S,), (C, S) or (1, C, S), got {audio.shape}")
    return audio.mean(axis=0, keepdims=True)


@dataclass
class EvalClip:
    """One clip to score.

    Attributes:
        video: uint8 ``(T, H, W, 3)`` RGB.
        fps: frames per second of ``video``.
        audio: float32 ``(1, S)`` in ``[-1, 1]`` or ``None`` for a silent clip.
        sample_rate: sample rate of ``audio`` in Hz.
        prompt: the text the clip was generated from (or its caption).
        meta: synthetic-world ground-truth metadata (``data_pipelines.synthetic`` schema) or ``None``.
        reference: the clip this one should reproduce (reconstruction, Physics-IQ), or ``None``.
        given_frames: how many leading frames of ``video`` were given to the model as a condition rather than
            generated (0 for text-to-video; 1 for image-to-video; the context prefix for extension). Metrics
            that judge the model's own frames (spatial relations, persistence, detection and colour, the
            motion guard, position error) skip them; see each metric's docstring.
    """

    video: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int = 16000
    prompt: str = ""
    meta: dict | None = None
    reference: EvalClip | None = None
    given_frames: int = 0

    def __post_init__(self) -> None:
        self.video = as_uint8_video(self.video)
        self.audio = as_mono_audio(self.audio)
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if not 0 <= int(self.given_frames) < self.video.shape[0]:
            raise ValueError(
                f"given_frames must be in [0, {self.video.shape[0]}) (at least one generated frame), "
                f"got {self.given_frames}"
            )
        self.given_frames = int(self.given_frames)

    @classmethod
    def from_media(
        cls, media: Media, prompt: str = "", meta: dict | None = None, given_frames: int = 0
    ) -> EvalClip:
        """Build from a decoded :class:`sora.media.Media`; ``meta`` defaults to the mp4's ``sora`` metadata
        when that holds ground-truth tracks, ``prompt`` to its caption."""
        if meta is None and "tracks" in media.metadata:
            meta = media.metadata
        return cls(
            video=media.video,
            fps=media.fps,
            audio=media.audio,
            sample_rate=media.sample_rate or 16000,
            prompt=prompt or str(media.metadata.get("caption", "")),
            meta=meta,
            given_frames=given_frames,
        )

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def generated(self) -> np.ndarray:
        """``(T,)`` bool: the frames the model generated (not given to it as a condition)."""
        return np.arange(self.num_frames) >= self.given_frames

    def require_meta(self, metric: str) -> dict:
        """The ground-truth metadata, or :class:`MissingInput` naming ``metric``."""
        if self.meta is None:
            raise MissingInput(f"{metric} needs ground-truth metadata (synthetic world clips only)")
        return self.meta

    def require_audio(self, metric: str) -> np.ndarray:
        """The ``(1, S)`` audio, or :class:`MissingInput` naming ``metric``."""
        if self.audio is None or self.audio.shape[1] == 0:
            raise MissingInput(f"{metric} needs audio and the clip has none")
        return self.audio

    def require_reference(self, metric: str) -> EvalClip:
        """The reference clip (same frame size; metrics compare the first ``min(T, T_ref)`` frames).

        Raises :class:`MissingInput` without a reference and ``ValueError`` when the frame sizes differ.
        """
        if self.reference is None:
            raise MissingInput(f"{metric} needs a reference clip")
        if self.reference.video.shape[1:] != self.video.shape[1:]:
            raise ValueError(
                f"{metric}: reference {self.reference.video.shape} and clip {self.video.shape} "
                "differ in frame size"
            )
        return self.reference
