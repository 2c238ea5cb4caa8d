"""The captioner interface: what every captioner takes (a clip's frames, sound and metadata) and returns.

Implementations live beside this file (``captioners.py``: ground truth, pass-through, a Hugging Face
vision-language model; ``pixel.py``: the weight-free pixel captioner of the synthetic world). The batch job
``python -m recaption.run`` and ``data_pipelines.ingest`` (``captioner=``) call them through this interface
only, so a new captioner is one class.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CaptionInput:
    """One clip as a captioner sees it.

    Attributes:
        frames: uint8 (T, H, W, 3), every decoded frame of the clip (a captioner samples what it needs).
        audio: float32 (C, S) in [-1, 1], or None for a clip without sound.
        fps: video frames per second.
        sample_rate: audio samples per second (0 when there is no audio).
        meta: the shard sample's json metadata (the synthetic world's ground truth lives here).
        caption: the caption the clip has now (``txt``; "" when it has none).
        key: the sample's ``__key__`` (for messages and reports).
    """

    frames: np.ndarray
    audio: np.ndarray | None = None
    fps: float = 24.0
    sample_rate: int = 0
    meta: dict = field(default_factory=dict)
    caption: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {tuple(self.frames.shape)}"
            )
        if self.frames.shape[0] == 0:
            raise ValueError(f"clip {self.key!r} has no frames")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


@dataclass
class Caption:
    """What a captioner wrote for one clip.

    Attributes:
        text: the caption that goes into the shard's ``txt`` (never empty: a captioner that has nothing to
            say raises, and the job keeps the original caption and counts the failure).
        forms: optional other forms of the same caption (``{"short": ..., "structured": ...}``), stored in
            the json under ``captions`` so the DataModule can mix them (``caption_keys``).
    """

    text: str
    forms: dict[str, str] = field(default_factory=dict)


class Captioner(abc.ABC):
    """Frames + audio + metadata -> caption, a batch at a time.

    Subclasses set ``name`` and ``version`` (recorded in every recaptioned sample's json, so a shard says
    which captioner wrote its text) and implement :meth:`caption_batch`.
    """

    name: str = "captioner"
    version: str = "1"

    @abc.abstractmethod
    def caption_batch(self, clips: list[CaptionInput]) -> list[Caption]:
        """One :class:`Caption` per clip, in order. Raise ``CaptionError`` for a clip it cannot caption
        (the batch job then retries the clips of that batch one by one, so one bad clip costs only itself)."""

    def caption(self, clip: CaptionInput) -> Caption:
        """Caption one clip."""
        return self.caption_batch([clip])[0]

    def describe(self) -> dict:
        """What goes into a sample's json as ``captioner``."""
        return {"name": self.name, "version": self.version}


class CaptionError(ValueError):
    """A clip the captioner cannot caption (missing metadata, no frames it understands, an empty answer)."""
