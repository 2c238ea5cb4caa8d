"""`WorldConfig`: every knob of the synthetic physics world, validated when it is built.

Physical quantities are given in SI units (metres, seconds, m/s) and converted to image pixels through
``px_per_m = height / world_height_m``, so a 128x128 world looks like a 64x64 one at twice the detail
instead of a world with objects half the size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FAMILIES: tuple[str, ...] = ("fall", "throw", "slide", "collide", "static")
"""Scene families: what the objects are set up to do (see ``world.py`` for each recipe)."""

SHAPES: tuple[str, ...] = ("circle", "box")
MATERIALS: tuple[str, ...] = ("rubber", "wood", "metal")
SIZE_NAMES: tuple[str, ...] = ("small", "medium", "large")
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "gradient", "noise", "random")
"""``random`` picks one of the other kinds per clip."""

MAX_OBJECTS = 3
BOX_SCALE = 0.9
"""A box's half extent is this fraction of its size class's radius, so boxes and balls look equally big."""


def _default_sizes() -> dict[str, float]:
    return {"small": 0.1, "medium": 0.15, "large": 0.2}


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines the synthetic world; invalid values raise ``ValueError`` naming the field.

    Attributes:
        width, height: frame size in pixels (even, for H.264 4:2:0, and at least 32).
        fps, duration: frame rate and clip length in seconds; ``num_frames = round(fps * duration)``.
        substeps: physics steps per video frame (contacts are timed to one substep, then refined).
        sample_rate: audio sample rate in Hz (the project default is 16 kHz mono).
        families: scene families a clip may be drawn from.
        min_objects, max_objects: how many rigid objects a scene holds (1 to 3).
        shapes, materials: what objects may be made of.
        sizes: radius in metres of each size class (boxes use ``BOX_SCALE`` times it as half extent).
        world_height_m: how many metres the image spans vertically (sets ``px_per_m``).
        gravity: downward acceleration in m/s^2.
        min_impact_speed: normal approach speed (m/s) below which a contact is resting, not an impact.
        contact_debounce: seconds during which a second impact of the same pair is ignored.
        background: ``plain``, ``gradient``, ``noise`` or ``random``.
        ambience_level: RMS of the low background rumble added to the sound (0 turns it off).
    """

    width: int = 64
    height: int = 64
    fps: float = 24.0
    duration: float = 2.0
    substeps: int = 10
    sample_rate: int = 16000
    families: tuple[str, ...] = FAMILIES
    min_objects: int = 1
    max_objects: int = 3
    shapes: tuple[str, ...] = SHAPES
    materials: tuple[str, ...] = MATERIALS
    sizes: dict[str, float] = field(default_factory=_default_sizes)
    world_height_m: float = 2.0
    gravity: float = 9.81
    min_impact_speed: float = 0.6
    contact_debounce: float = 0.05
    background: str = "random"
    ambience_level: float = 0.003

    def __post_init__(self) -> None:
        # Hydra hands over ListConfig/DictConfig; store plain tuples and dicts so the config pickles and
        # serialises like any dataclass.
        for name in ("families", "shapes", "materials"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        object.__setattr__(self, "sizes", {str(k): float(v) for k, v in dict(self.sizes).items()})
        self._validate()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> WorldConfig:
        """Build from a mapping (e.g. the ``world`` node of a Hydra config); unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown WorldConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in every clip's metadata so a clip can be regenerated)."""
        out = asdict(self)
        for name in ("families", "shapes", "materials"):
            out[name] = list(out[name])
        return out

    # ---- derived quantities -------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return round(self.fps * self.duration)

    @property
    def px_per_m(self) -> float:
        return self.height / self.world_height_m

    @property
    def gravity_px(self) -> float:
        """Gravity in image pixels / s^2."""
        return self.gravity * self.px_per_m

    @property
    def floor_px(self) -> int:
        """Height of the floor band at the bottom of the image, in whole pixels."""
        return max(2, round(0.06 * self.height))

    def radius_px(self, size: str) -> float:
        return self.sizes[size] * self.px_per_m

    # ---- validation ---------------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 32 or value % 2:
                raise ValueError(
                    f"{name} must be an even integer >= 32 (H.264 4:2:0 needs even sizes), got {value!r}"
                )
        for name in ("fps", "duration", "world_height_m", "gravity"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.num_frames < 2:
            raise ValueError(
                f"duration * fps must give at least 2 frames, got duration={self.duration}, fps={self.fps}"
            )
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"substeps must be an integer >= 1, got {self.substeps!r}")
        if not isinstance(self.sample_rate, int) or not 8000 <= self.sample_rate <= 96000:
            raise ValueError(f"sample_rate must be an integer in [8000, 96000], got {self.sample_rate!r}")
        self._check_choices("families", "scene family", self.families, FAMILIES)
        self._check_choices("shapes", "shape", self.shapes, SHAPES)
        self._check_choices("materials", "material", self.materials, MATERIALS)
        if self.background not in BACKGROUND_KINDS:
            raise ValueError(f"background must be one of {list(BACKGROUND_KINDS)}, got {self.background!r}")
        if not 1 <= self.min_objects <= MAX_OBJECTS:
            raise ValueError(f"min_objects must be in [1, {MAX_OBJECTS}], got {self.min_objects}")
        if not 1 <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(f"max_objects must be in [1, {MAX_OBJECTS}], got {self.max_objects}")
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) must be <= max_objects ({self.max_objects})")
        if "collide" in self.families and self.max_objects < 2:
            raise ValueError(
                f"max_objects must be >= 2 when families include 'collide', got {self.max_objects}"
            )
        for name in ("min_impact_speed", "contact_debounce"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0 <= self.ambience_level <= 0.5:
            raise ValueError(f"ambience_level must be in [0, 0.5], got {self.ambience_level!r}")
        self._validate_sizes()

    def _validate_sizes(self) -> None:
        if set(self.sizes) != set(SIZE_NAMES):
            raise ValueError(f"sizes must have exactly the keys {list(SIZE_NAMES)}, got {sorted(self.sizes)}")
        for name in SIZE_NAMES:
            if not self.sizes[name] > 0:
                raise ValueError(f"sizes['{name}'] must be > 0, got {self.sizes[name]}")
        if not self.sizes["small"] < self.sizes["medium"] < self.sizes["large"]:
            raise ValueError(f"sizes must grow small < medium < large, got {self.sizes}")
        # A tumbling box sweeps a circle of its half diagonal; max_objects of them side by side must fit
        # in the width, and one must fit comfortably in the height above the floor.
        largest = self.radius_px("large") * max(1.0, BOX_SCALE * math.sqrt(2))
        if 2 * largest * self.max_objects > 0.95 * self.width or 2 * largest > 0.4 * self.height:
            raise ValueError(
                f"sizes['large'] = {self.sizes['large']} m ({largest:.1f} px incl. rotation) is too big for "
                f"{self.max_objects} object(s) in a {self.width}x{self.height} px scene "
                f"({self.world_height_m} m high)"
            )
        if self.radius_px("small") < 1.5:
            raise ValueError(
                f"sizes['small'] = {self.sizes['small']} m is only {self.radius_px('small'):.2f} px at this "
                f"resolution; it must be at least 1.5 px to stay visible"
            )

    @staticmethod
    def _check_choices(name: str, what: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
        if not values:
            raise ValueError(f"{name} must not be empty; choose from {list(allowed)}")
        for value in values:
            if value not in allowed:
                raise ValueError(f"{name}: unknown {what} {value!r}; choose from {list(allowed)}")
