"""Looking at a dataset at a glance: a contact sheet PNG (rows = clips, columns = frames, with captions)
and an animated GIF of the same clips playing side by side."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .config import WorldConfig
from .shards import Clip, clip_family, clip_seed, generate_clip

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
GAP = 4
"""Pixels between frames and around rows."""


def contact_sheet(clips: Sequence[Clip], columns: int = 8, scale: int = 2) -> Image.Image:
    """One row per clip: family, seed and caption, then ``columns`` evenly spaced frames with their times.

    Frames are enlarged ``scale`` times with nearest-neighbour sampling, so pixels stay pixels.
    """
    if not clips:
        raise ValueError("contact_sheet needs at least one clip")
    font = _font(11)
    frame_h, frame_w = clips[0].video.shape[1] * scale, clips[0].video.shape[2] * scale
    sheet_w = GAP + columns * (frame_w + GAP)
    chars_per_line = max(20, sheet_w // 7)
    line_h = 14
    rows = []
    for clip in clips:
        header = f"[{clip.meta['family']} | seed {clip.meta['seed']}] {clip.caption}"
        lines = textwrap.wrap(header, chars_per_line)
        rows.append((clip, lines))
    sheet_h = sum(GAP + len(lines) * line_h + GAP + frame_h + line_h + GAP for _, lines in rows)
    sheet = Image.new("RGB", (sheet_w, sheet_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = 0
    for clip, lines in rows:
        y += GAP
        for line in lines:
            draw.text((GAP, y), line, fill=TEXT, font=font)
            y += line_h
        y += GAP
        num_frames = clip.video.shape[0]
        for column, frame_index in enumerate(np.linspace(0, num_frames - 1, columns).round().astype(int)):
            x = GAP + column * (frame_w + GAP)
            sheet.paste(_enlarge(clip.video[frame_index], scale), (x, y))
            draw.text((x, y + frame_h + 1), f"t={frame_index / clip.meta['fps']:.2f}s", fill=TEXT, font=font)
        y += frame_h + line_h + GAP
    return sheet


def animation(clips: Sequence[Clip], per_row: int = 4, scale: int = 2) -> list[Image.Image]:
    """The clips as a grid that plays all of them at once: one PIL image per frame."""
    if not clips:
        raise ValueError("animation needs at least one clip")
    num_frames, height, width, _ = clips[0].video.shape
    rows = -(-len(clips) // per_row)
    cols = min(per_row, len(clips))
    size = (GAP + cols * (width * scale + GAP), GAP + rows * (height * scale + GAP))
    frames = []
    for t in range(num_frames):
        canvas = Image.new("RGB", size, BACKGROUND)
        for i, clip in enumerate(clips):
            frame = clip.video[min(t, clip.video.shape[0] - 1)]
            canvas.paste(
                _enlarge(frame, scale),
                (GAP + (i % per_row) * (width * scale + GAP), GAP + (i // per_row) * (height * scale + GAP)),
            )
        frames.append(canvas)
    return frames


def preview_world(
    world: WorldConfig, seed: int, count: int, out_dir: str | Path, *, gif: bool = True
) -> list[Path]:
    """Preview of the first ``count`` clips of the world ``(world, seed)``: regenerated, not read back (clip
    i is a pure function of (world, seed, i), and the shards holding them may come from an earlier run)."""
    clips = [generate_clip(world, clip_seed(seed, i), clip_family(world.families, i)) for i in range(count)]
    return write_preview(clips, out_dir, gif=gif) if clips else []


def write_preview(
    clips: Sequence[Clip], out_dir: str | Path, *, gif: bool = True, columns: int = 8
) -> list[Path]:
    """Write ``preview.png`` (contact sheet) and, with ``gif``, ``preview.gif`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "preview.png"]
    contact_sheet(clips, columns=columns).save(paths[0])
    if gif:
        frames = animation(clips)
        paths.append(out / "preview.gif")
        frames[0].save(
            paths[1],
            save_all=True,
            append_images=frames[1:],
            loop=0,
            duration=round(1000 / float(clips[0].meta["fps"])),
        )
    return paths


def _enlarge(frame: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(frame)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale != 1 else image


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (older Pillow: its fixed bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()
