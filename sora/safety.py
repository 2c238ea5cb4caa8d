"""Prompt filtering, a visible moving watermark, and provenance metadata for generated clips.

``python -m sora.safety verify clip.mp4`` prints the provenance record stored in a generated clip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

import sora
from sora import media

GENERATOR_NAME = "sora-open"

# A deliberately small default: the filter is a mechanism, and deployments bring their own lists and
# classifiers. Patterns are case-insensitive regular expressions matched on word boundaries.
DEFAULT_BLOCKLIST: tuple[str, ...] = (
    r"child\s+(sexual|porn\w*)",
    r"csam",
    r"non-?consensual\s+(intimate|sexual)",
    r"(make|build)\s+(a\s+)?(bomb|explosive|nerve\s+agent)",
)

Classifier = Callable[[str], "tuple[bool, str] | bool"]


class PromptRejected(ValueError):
    """Raised for a prompt the filter refuses; ``rule`` names what matched."""

    def __init__(self, prompt: str, rule: str) -> None:
        self.prompt, self.rule = prompt, rule
        super().__init__(f"prompt rejected by the safety filter (rule: {rule}); no clip was generated")


@dataclass
class PromptFilter:
    """A configurable blocklist of regular expressions plus optional pluggable classifiers.

    A classifier is any callable ``prompt -> bool`` or ``prompt -> (flagged, reason)``: ``True`` means reject.
    """

    blocklist: Sequence[str] = DEFAULT_BLOCKLIST
    classifiers: Sequence[Classifier] = field(default_factory=tuple)
    enabled: bool = True

    def __post_init__(self) -> None:
        self._patterns = [(p, re.compile(rf"\b(?:{p})\b", re.IGNORECASE)) for p in self.blocklist]

    def check(self, prompt: str) -> str | None:
        """The name of the rule that rejects ``prompt``, or ``None`` when it is allowed."""
        if not self.enabled:
            return None
        for source, pattern in self._patterns:
            if pattern.search(prompt):
                return f"blocklist:{source}"
        for classifier in self.classifiers:
            verdict = classifier(prompt)
            flagged, reason = verdict if isinstance(verdict, tuple) else (verdict, "")
            if flagged:
                return f"classifier:{getattr(classifier, '__name__', type(classifier).__name__)}" + (
                    f":{reason}" if reason else ""
                )
        return None

    def require(self, prompt: str) -> None:
        """Raise :class:`PromptRejected` if the prompt is refused."""
        rule = self.check(prompt)
        if rule is not None:
            raise PromptRejected(prompt, rule)


@lru_cache(maxsize=32)
def _text_mask(text: str) -> np.ndarray:
    """A binary bitmap of ``text`` in PIL's built-in bitmap font (no font file needed), (h, w) bool."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    image = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(image).text((1 - left, 1 - top), text, fill=255, font=font)
    return np.asarray(image) > 127


def watermark_position(
    frame_index: int, num_frames: int, box: tuple[int, int], size: tuple[int, int]
) -> tuple[int, int]:
    """Top-left corner of the mark in frame ``frame_index``: it drifts diagonally and bounces off the edges,
    so cropping a fixed region never removes it from every frame."""
    (bh, bw), (h, w) = box, size
    span_y, span_x = max(h - bh, 0), max(w - bw, 0)

    def bounce(pos: int, span: int) -> int:
        if span == 0:
            return 0
        pos %= 2 * span
        return pos if pos <= span else 2 * span - pos

    return bounce(frame_index, span_y), bounce(2 * frame_index, span_x)


def apply_watermark(video: np.ndarray, text: str = "AI", opacity: float = 0.6) -> np.ndarray:
    """Blend a visible moving ``text`` mark into uint8 video (T, H, W, 3); returns a new array.

    The mark is drawn white with a dark outline so it reads on any background; its size is scaled
    down for very small frames (it never covers more than half the frame's width).
    """
    if not 0.0 < opacity <= 1.0:
        raise ValueError(f"watermark opacity must be in (0, 1], got {opacity}")
    if video.ndim != 4 or video.dtype != np.uint8:
        raise ValueError(f"video must be uint8 (T, H, W, 3), got {video.dtype} {video.shape}")
    num_frames, height, width, _ = video.shape
    mask = _text_mask(text)
    while mask.shape[1] > max(width // 2, 4) and mask.shape[0] > 2:  # shrink on tiny frames
        mask = mask[::2, ::2] | mask[1::2, 1::2][: mask[::2, ::2].shape[0], : mask[::2, ::2].shape[1]]
    mh, mw = min(mask.shape[0], height), min(mask.shape[1], width)
    mask = mask[:mh, :mw]
    outline = np.zeros_like(mask)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        outline |= np.roll(mask, (dy, dx), axis=(0, 1))
    outline &= ~mask
    out = video.astype(np.float32)
    for i in range(num_frames):
        y, x = watermark_position(i, num_frames, (mh, mw), (height, width))
        region = out[i, y : y + mh, x : x + mw]
        region[mask] = (1 - opacity) * region[mask] + opacity * 255.0
        region[outline] = (1 - opacity) * region[outline]
    return out.round().clip(0, 255).astype(np.uint8)


def provenance(
    *, prompt: str, seed: int, config_hash: str, mode: str = "t2av", extra: dict | None = None
) -> dict:
    """The record stored in every generated clip's container metadata (C2PA-like, unsigned)."""
    record = {
        "generator": GENERATOR_NAME,
        "version": sora.__version__,
        "ai_generated": True,
        "model_config_hash": config_hash,
        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "seed": int(seed),
        "mode": mode,
        "created_unix": round(time.time(), 3),
    }
    if extra:
        record.update(extra)
    return record


def verify(path: str) -> dict:
    """Read the provenance record from a clip; raises ValueError if it has none."""
    record = media.read_metadata(path)
    if record.get("generator") != GENERATOR_NAME:
        raise ValueError(f"{path}: no {GENERATOR_NAME} provenance metadata found")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sora.safety", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="print the provenance record of a generated clip")
    check.add_argument("clips", nargs="+")
    args = parser.parse_args(argv)
    status = 0
    for clip in args.clips:
        try:
            print(json.dumps({"clip": clip, **verify(clip)}, indent=2, sort_keys=True))
        except (ValueError, OSError) as err:
            print(f"{clip}: {err}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
