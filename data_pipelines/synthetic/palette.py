"""Colours of the synthetic world: object palette, backgrounds and floor, and how a clip's backdrop is drawn.

Evaluation segments objects by colour distance to :data:`PALETTE` on decoded (H.264, 4:2:0) frames, so:
- object colours are saturated or bright and at least ~85 RGB units apart from each other;
- backgrounds and the floor are dark and desaturated (no channel above ~100), far from every palette colour;
- textures are low amplitude (a few grey levels) so they never push a background pixel towards an object.
``tests/data_pipelines/test_synthetic_media.py`` checks these margins.
"""

from __future__ import annotations

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (40, 100, 250),
    "yellow": (245, 225, 40),
    "purple": (190, 60, 230),
    "cyan": (40, 220, 230),
    "orange": (250, 140, 30),
    "white": (245, 245, 245),
}
"""Object colours by name (the name is what captions say)."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (14, 14, 16),
    "charcoal": (40, 40, 44),
    "navy": (20, 26, 56),
    "slate": (44, 52, 62),
    "forest": (22, 44, 30),
    "brown": (56, 42, 32),
    "plum": (48, 30, 50),
}
"""Backdrop colours by name; no name shares a word with a palette colour, so captions stay unambiguous."""

FLOOR_RGB: tuple[int, int, int] = (96, 96, 100)
"""The floor band: a neutral grey, lighter than every backdrop, far from every palette colour."""

NOISE_AMPLITUDE = 6.0
"""Peak deviation of the ``noise`` texture in grey levels."""

GRADIENT_STEP = 26
"""How much lighter the bottom of a ``gradient`` backdrop is than its top, in grey levels."""

_NOISE_CELL = 4
"""The noise texture is smooth: random values on a grid of this many pixels, interpolated in between."""


def sample_background(kind: str, rng: np.random.Generator) -> dict:
    """Draw a backdrop of ``kind`` (``plain``, ``gradient``, ``noise`` or ``random``) as a JSON-able spec.

    The spec is stored in the clip's metadata under ``background``; :func:`background_image` draws it.
    """
    if kind == "random":
        kind = str(rng.choice(["plain", "gradient", "noise"]))
    name = str(rng.choice(list(BACKGROUNDS)))
    rgb = list(BACKGROUNDS[name])
    spec: dict = {"kind": kind, "name": name, "rgb": rgb, "floor_rgb": list(FLOOR_RGB)}
    if kind == "gradient":
        spec["rgb_bottom"] = [min(c + GRADIENT_STEP, 100) for c in rgb]
    elif kind == "noise":
        spec["noise_amplitude"] = NOISE_AMPLITUDE
        spec["noise_seed"] = int(rng.integers(2**31))
    elif kind != "plain":
        raise ValueError(f"background must be one of plain, gradient, noise, random; got {kind!r}")
    return spec


def background_image(spec: dict, height: int, width: int, floor_top: int) -> np.ndarray:
    """Draw a backdrop spec as float32 (H, W, 3) in [0, 255]; rows ``floor_top:`` are the floor band.
    ``mirrored: true`` in the spec flips its noise left/right (a mirrored clip's backdrop,
    :mod:`data_pipelines.mirror`)."""
    rgb = np.asarray(spec["rgb"], np.float32)
    image = np.broadcast_to(rgb, (height, width, 3)).copy()
    kind = spec["kind"]
    if kind == "gradient":
        bottom = np.asarray(spec["rgb_bottom"], np.float32)
        ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]  # (H, 1, 1)
        image = (1.0 - ramp) * rgb + ramp * bottom + np.zeros((1, width, 1), np.float32)
    elif kind == "noise":
        noise = _smooth_noise(spec["noise_seed"], height, width)
        image += spec["noise_amplitude"] * (noise[:, ::-1] if spec.get("mirrored") else noise)[..., None]
    elif kind != "plain":
        raise ValueError(f"unknown background kind {kind!r}")
    image[floor_top:] = np.asarray(spec["floor_rgb"], np.float32)
    return np.clip(image, 0.0, 255.0)


def _smooth_noise(seed: int, height: int, width: int) -> np.ndarray:
    """Value noise in [-1, 1], float32 (H, W): a coarse random grid, bilinearly interpolated."""
    rng = np.random.default_rng(seed)
    grid = rng.uniform(-1.0, 1.0, size=(height // _NOISE_CELL + 2, width // _NOISE_CELL + 2))
    rows = np.arange(height) / _NOISE_CELL
    cols = np.arange(width) / _NOISE_CELL
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c0 + 1] * fc
    bottom = grid[r0 + 1][:, c0] * (1 - fc) + grid[r0 + 1][:, c0 + 1] * fc
    return ((1 - fr) * top + fr * bottom).astype(np.float32)
