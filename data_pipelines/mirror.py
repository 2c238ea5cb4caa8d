"""Mirrored samples: a clip flipped left/right, its captions and metadata told the same way.

A left/right flip is the one augmentation that changes what a caption says: "a red ball on the left rolls
to the right" becomes "... on the right rolls to the left". Flipping the pixels alone (the usual image
augmentation) would teach the model that the side words mean nothing; flipping the pixels and swapping the
side words gives each clip a twin that differs in its side words and its layout only, the cleanest signal
there is for binding the two (the quickstart's DiT ignored them: README, "Why left/right is at chance"). The
physics world is symmetric (gravity is vertical, the walls are alike), so a mirrored clip is a clip the world
could have made. Sound is mono here: it does not change.

:func:`swap_sides` swaps the words (``left``/``right``, ``leftwards``/``rightwards``, ``leftmost``/
``rightmost``, case kept); :func:`mirror_meta` applies it to every caption in a sample's json and mirrors the
synthetic world's geometry (``tracks`` x, vx, angle and bbox; ``start``; ``relations``; ``caption_facts``;
``contacts`` with a wall; the walls in ``scene``; a noise backdrop), so the metadata describes the mirrored
clip. The flip of the pixels is the caller's (``encode_shards(mirror=True)`` flips the video before the VAE:
a VAE's latent grid is not flip-equivariant, so flipping latents would not make the latent of the flipped
clip; measured on the quickstart's VAE: 0.48 relative error).

English only: a caption where "right" means "correct" ("at the right moment") would be swapped too; the
world's captions never use it so (every "left"/"right" in them is a side or a direction).
"""

from __future__ import annotations

import copy
import re
from typing import Any

_SWAP = {
    "left": "right",
    "right": "left",
    "leftwards": "rightwards",
    "rightwards": "leftwards",
    "leftmost": "rightmost",
    "rightmost": "leftmost",
}
_WORDS = re.compile(r"\b(" + "|".join(sorted(_SWAP, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_VALUES = {  # metadata string values that name a side
    "left": "right",
    "right": "left",
    "left of": "right of",
    "right of": "left of",
    "wall_left": "wall_right",
    "wall_right": "wall_left",
    "leftwards": "rightwards",
    "rightwards": "leftwards",
}
MIRROR_SUFFIX = "_mirror"  # the mirrored twin's sample key: <key>_mirror


def swap_sides(text: str) -> str:
    """``text`` with left and right swapped, word by word, keeping each word's case ("Left" -> "Right",
    "LEFT" -> "RIGHT")."""

    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = _SWAP[word.lower()]
        if word.isupper():
            return new.upper()
        return new.capitalize() if word[0].isupper() else new

    return _WORDS.sub(swap, text)


def _swap_values(value: Any) -> Any:
    """Side-naming strings swapped in a nested structure (dict keys kept); other values as they are."""
    if isinstance(value, str):
        return _VALUES.get(value, value)
    if isinstance(value, list):
        return [_swap_values(v) for v in value]
    if isinstance(value, dict):
        return {k: _swap_values(v) for k, v in value.items()}
    return value


def mirror_x(x: Any, width: float) -> Any:
    """Image x (pixel centres at 0 .. width-1) mirrored: ``width - 1 - x`` (lists elementwise)."""
    if isinstance(x, list):
        return [mirror_x(v, width) for v in x]
    return round(float(width) - 1.0 - float(x), 4)


def mirror_meta(meta: dict, width: float | None = None) -> dict:
    """A copy of a sample's json describing its left/right mirror image: every caption (``caption``,
    ``captions``, ``caption_txt``) with its sides swapped, and the world's geometry mirrored about the frame's
    vertical centre line (``width``: the frame's, else ``meta["width"]``). ``mirrored`` is set to True
    (False again for a mirror of a mirror)."""
    out = copy.deepcopy(meta)
    for key in ("caption", "caption_txt"):
        if isinstance(out.get(key), str):
            out[key] = swap_sides(out[key])
    if isinstance(out.get("captions"), dict):
        out["captions"] = {k: swap_sides(v) if isinstance(v, str) else v for k, v in out["captions"].items()}
    for key in ("start", "relations", "caption_facts", "contacts"):
        if key in out:
            out[key] = _swap_values(out[key])
    w = width if width is not None else out.get("width")
    if w is not None:
        for track in out.get("tracks") or []:
            if "x" in track:
                track["x"] = mirror_x(track["x"], w)
            if "vx" in track:
                track["vx"] = [-float(v) for v in track["vx"]]
            if "angle" in track:
                track["angle"] = [-float(v) for v in track["angle"]]
            if "bbox" in track:  # [x0, y0, x1, y1] per frame: the mirrored box's left edge is the old right's
                track["bbox"] = [[mirror_x(b[2], w), b[1], mirror_x(b[0], w), b[3]] for b in track["bbox"]]
        scene = out.get("scene")
        if isinstance(scene, dict) and "wall_left_x" in scene and "wall_right_x" in scene:
            left, right = scene["wall_left_x"], scene["wall_right_x"]
            scene["wall_left_x"], scene["wall_right_x"] = mirror_x(right, w), mirror_x(left, w)
    background = out.get("background")
    if isinstance(background, dict) and background.get("kind") == "noise":  # the only asymmetric backdrop
        if background.pop("mirrored", False) is False:
            background["mirrored"] = True
    out["mirrored"] = not bool(meta.get("mirrored", False))
    return out
