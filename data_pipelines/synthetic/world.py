"""The physics world: a recipe per scene family, a pymunk simulation, and the ground truth it records.

Coordinates. pymunk runs in pixel units with y pointing UP (the physics convention: gravity is (0, -g)
and "up" velocities are positive); the walls sit at x = 0 and x = W, the ceiling at y = H and the floor
surface at y = floor_px. Everything that leaves this module is in IMAGE coordinates: x grows to the right,
y grows DOWN, pixel (row i, column j) is centred at (x=j, y=i), angles are in radians and positive means
clockwise on screen. :func:`world_to_image` is the only place that converts between the two.

Contacts. An impact is a new touch between two shapes (pymunk's ``begin``) whose normal approach speed
is at least ``min_impact_speed``; slower touches are resting or rolling contact, and a pair is debounced
for ``contact_debounce`` seconds, so an object lying on the floor makes no sound. A second impact inside
a touch that never broke (a tumbling box slapping onto its face while a corner still touches) is not
heard; that is the price of not running Python on every solver step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pymunk

from .config import BOX_SCALE, WorldConfig
from .palette import PALETTE


@dataclass(frozen=True)
class MaterialPhysics:
    """How a material moves: elasticity range (sampled per object), friction, and areal density in kg/m^2."""

    elasticity: tuple[float, float]
    friction: float
    density: float


MATERIAL_PHYSICS: dict[str, MaterialPhysics] = {
    "rubber": MaterialPhysics(elasticity=(0.75, 0.9), friction=0.7, density=11.0),
    "wood": MaterialPhysics(elasticity=(0.45, 0.65), friction=0.5, density=7.0),
    "metal": MaterialPhysics(elasticity=(0.25, 0.45), friction=0.3, density=78.0),
}


@dataclass
class Body:
    """One rigid object: its look, its physics, and its initial state in WORLD coordinates (y up, px)."""

    id: int
    shape: str
    color: str
    size: str
    material: str
    half_extent: float
    """Circle radius or half the side of the (square) box, in pixels."""
    elasticity: float
    friction: float
    mass: float
    role: str = "resting"
    """What the scene recipe made it do: dropped, thrown, slid, launched or resting."""
    position: tuple[float, float] = (0.0, 0.0)
    velocity: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    angular_velocity: float = 0.0

    @property
    def extent(self) -> float:
        """Radius of the circle the shape sweeps when it rotates (circle radius or box half diagonal)."""
        return self.half_extent * (math.sqrt(2.0) if self.shape == "box" else 1.0)

    def to_meta(self) -> dict:
        """The ``objects`` entry of the clip metadata."""
        return {
            "id": self.id,
            "shape": self.shape,
            "color": self.color,
            "rgb": list(PALETTE[self.color]),
            "size": self.size,
            "radius_px": round(self.extent, 4),
            "half_extent_px": [round(self.half_extent, 4)] * 2,
            "mass": round(self.mass, 5),
            "elasticity": round(self.elasticity, 4),
            "friction": round(self.friction, 4),
            "material": self.material,
            "role": self.role,
        }


def world_to_image(x, y, vx, vy, angle, height: int):
    """World (y up, walls at 0 and W) -> image (y down, pixel centres at integers): THE conversion.

    Works on floats or numpy arrays. Returns ``(x, y, vx, vy, angle)`` in image axes.
    """
    return x - 0.5, (height - 0.5) - y, vx, -vy, -angle


# ---- scene recipes (all in world coordinates) --------------------------------------------------------
def build_scene(config: WorldConfig, family: str, rng: np.random.Generator) -> list[Body]:
    """Sample the objects of one clip of ``family`` with their initial states."""
    if family not in _RECIPES:
        raise ValueError(f"family: unknown scene family {family!r}; choose from {list(_RECIPES)}")
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    if family == "collide":
        count = max(count, 2)
    bodies = _sample_bodies(config, count, rng)
    _RECIPES[family](config, bodies, rng)
    return bodies


def _sample_bodies(config: WorldConfig, count: int, rng: np.random.Generator) -> list[Body]:
    colors = rng.choice(list(PALETTE), size=count, replace=False)
    bodies = []
    for index, color in enumerate(colors):
        shape = str(rng.choice(config.shapes))
        size = str(rng.choice(list(config.sizes)))
        material = str(rng.choice(config.materials))
        physics = MATERIAL_PHYSICS[material]
        radius = config.radius_px(size)
        half_extent = radius * (BOX_SCALE if shape == "box" else 1.0)
        area_m2 = (math.pi if shape == "circle" else 4.0) * (half_extent / config.px_per_m) ** 2
        bodies.append(
            Body(
                id=index,
                shape=shape,
                color=str(color),
                size=size,
                material=material,
                half_extent=half_extent,
                elasticity=float(rng.uniform(*physics.elasticity)),
                friction=physics.friction,
                mass=physics.density * area_m2,
            )
        )
    return bodies


def _place_in_slots(bodies: list[Body], lo: float, hi: float, rng: np.random.Generator) -> None:
    """Give each body an x in its own slot of [lo, hi] (random order), so that no two overlap."""
    if not bodies:
        return
    width = (hi - lo) / len(bodies)
    for slot, body in zip(rng.permutation(len(bodies)), bodies):
        left, right = lo + slot * width + body.extent + 1.0, lo + (slot + 1) * width - body.extent - 1.0
        x = rng.uniform(left, right) if right > left else 0.5 * (left + right)
        body.position = (float(x), body.position[1])


def _rest_on_floor(config: WorldConfig, body: Body) -> None:
    body.position = (body.position[0], config.floor_px + body.half_extent)
    body.velocity, body.angle, body.angular_velocity = (0.0, 0.0), 0.0, 0.0


def _fall(config: WorldConfig, bodies: list[Body], rng: np.random.Generator) -> None:
    """Dropped from the upper part of the scene with a slight sideways drift; boxes tumble."""
    _place_in_slots(bodies, 0.0, config.width, rng)
    floor, height = config.floor_px, config.height
    for body in bodies:
        top = height - body.extent - 1.0
        low = min(floor + body.extent + 0.35 * (height - floor), top)
        body.position = (body.position[0], float(rng.uniform(low, top)))
        body.velocity = (float(rng.uniform(-0.05, 0.05) * config.width), 0.0)
        if body.shape == "box":
            body.angle = float(rng.uniform(-math.pi / 4, math.pi / 4))
            body.angular_velocity = float(rng.uniform(-2.0, 2.0))
        body.role = "dropped"


def _throw(config: WorldConfig, bodies: list[Body], rng: np.random.Generator) -> None:
    """The first body is thrown from one side towards the other in an arc; the others rest on the floor."""
    thrown, others = bodies[0], bodies[1:]
    width, height, floor = config.width, config.height, config.floor_px
    direction = int(rng.choice([-1, 1]))  # +1: starts on the left and flies right
    third = width / 3
    lo, hi = (0.0, third) if direction > 0 else (width - third, float(width))
    a, b = lo + thrown.extent + 1.0, hi - thrown.extent - 1.0
    if b < a:  # a body wider than its third (large sizes on a small frame): start at the third's centre
        a = b = (lo + hi) / 2
    x = rng.uniform(a, b)
    y = floor + thrown.extent + rng.uniform(0.05, 0.3) * (height - floor)
    rise = rng.uniform(0.3, 0.9) * max(height - 1.0 - thrown.extent - y, 0.0)
    thrown.position = (float(x), float(y))
    thrown.velocity = (
        float(direction * rng.uniform(0.3, 0.75) * width),
        math.sqrt(2 * config.gravity_px * rise),
    )
    if thrown.shape == "box":
        thrown.angular_velocity = float(rng.uniform(-4.0, 4.0))
    thrown.role = "thrown"
    rest_lo, rest_hi = (third, float(width)) if direction > 0 else (0.0, width - third)
    _place_in_slots(others, rest_lo, rest_hi, rng)
    for body in others:
        _rest_on_floor(config, body)


def _slide(config: WorldConfig, bodies: list[Body], rng: np.random.Generator) -> None:
    """The first body is pushed along the floor (a box slides and slows down under friction, a ball rolls);
    the others rest on the floor, where it may run into them."""
    _place_in_slots(bodies, 0.0, config.width, rng)
    for body in bodies:
        _rest_on_floor(config, body)
    mover = bodies[0]
    x = mover.position[0]
    direction = int(rng.choice([-1, 1]))
    room = (config.width - x if direction > 0 else x) - mover.half_extent
    if room < 0.25 * config.width:  # too close to the wall it would head for: go the other way
        direction = -direction
        room = (config.width - x if direction > 0 else x) - mover.half_extent
    if mover.shape == "box":
        # stop after a random share of the free run (a few reach the wall): v^2 = 2 mu g d
        speed = math.sqrt(2.0 * mover.friction * config.gravity_px * rng.uniform(0.3, 1.05) * room)
    else:  # a pushed ball keeps about 2/3 of its speed once friction has set it rolling
        speed = rng.uniform(0.3, 0.7) * config.width
    mover.velocity = (float(direction * speed), 0.0)
    mover.role = "slid"


def _collide(config: WorldConfig, bodies: list[Body], rng: np.random.Generator) -> None:
    """Two bodies launched at each other at the same height meet in the air; a third rests on the floor.

    Same height and same vertical velocity under the same gravity keep them level, so they meet head on
    at the chosen time, which is drawn before the first of them would reach the floor.
    """
    movers, others = bodies[:2], bodies[2:]
    left, right = (movers[0], movers[1]) if rng.random() < 0.5 else (movers[1], movers[0])
    width, height, floor, g = config.width, config.height, config.floor_px, config.gravity_px
    left_x = rng.uniform(left.extent + 1.0, max(0.3 * width, left.extent + 1.0))
    right_x = rng.uniform(min(0.7 * width, width - right.extent - 1.0), width - right.extent - 1.0)
    extent = max(left.extent, right.extent)
    low = floor + extent + 0.3 * (height - floor)
    y = min(rng.uniform(low, low + 0.25 * (height - floor)), height - extent - 2.0)
    vy = math.sqrt(2 * g * rng.uniform(0.0, 0.8) * max(height - 1.0 - extent - y, 0.0))
    flight = (vy + math.sqrt(vy * vy + 2 * g * (y - floor - extent))) / g
    meet = max(rng.uniform(0.3, 0.75) * flight, 0.1)
    gap = right_x - left_x - left.half_extent - right.half_extent
    closing, share = gap / meet, rng.uniform(0.35, 0.65)
    left.position, left.velocity = (float(left_x), float(y)), (float(closing * share), vy)
    right.position, right.velocity = (float(right_x), float(y)), (float(-closing * (1 - share)), vy)
    left.role = right.role = "launched"
    _place_in_slots(others, 0.3 * width, 0.7 * width, rng)
    for body in others:
        _rest_on_floor(config, body)


def _static(config: WorldConfig, bodies: list[Body], rng: np.random.Generator) -> None:
    """Objects lying on the floor; nothing moves."""
    _place_in_slots(bodies, 0.0, config.width, rng)
    for body in bodies:
        _rest_on_floor(config, body)


_RECIPES = {"fall": _fall, "throw": _throw, "slide": _slide, "collide": _collide, "static": _static}


# ---- simulation ---------------------------------------------------------------------------------------
def _make_space(config: WorldConfig, bodies: list[Body]) -> tuple[pymunk.Space, dict, list[pymunk.Body]]:
    """A space with thick static boundaries (no tunnelling) and one pymunk body per :class:`Body`."""
    space = pymunk.Space()
    space.gravity = (0.0, -config.gravity_px)
    width, height, floor = config.width, config.height, config.floor_px
    thick = float(max(width, height))
    static = space.static_body
    # Segments are capsules of radius `thick`; each is placed so that its surface is the scene edge.
    segments = {
        "floor": pymunk.Segment(static, (-width, floor - thick), (2 * width, floor - thick), thick),
        "wall_left": pymunk.Segment(static, (-thick, -height), (-thick, 2 * height), thick),
        "wall_right": pymunk.Segment(static, (width + thick, -height), (width + thick, 2 * height), thick),
        "ceiling": pymunk.Segment(static, (-width, height + thick), (2 * width, height + thick), thick),
    }
    labels: dict[pymunk.Shape, str | int] = {}
    for name, segment in segments.items():
        # Elasticity and friction combine by product in pymunk: 1.0 lets each object's own values rule.
        segment.elasticity, segment.friction = 1.0, 1.0
        labels[segment] = name
        space.add(segment)
    pm_bodies = []
    for spec in bodies:
        if spec.shape == "circle":
            moment = pymunk.moment_for_circle(spec.mass, 0.0, spec.half_extent)
            body = pymunk.Body(spec.mass, moment)
            shape: pymunk.Shape = pymunk.Circle(body, spec.half_extent)
        else:
            side = 2 * spec.half_extent
            body = pymunk.Body(spec.mass, pymunk.moment_for_box(spec.mass, (side, side)))
            shape = pymunk.Poly.create_box(body, (side, side))
        body.position, body.velocity = spec.position, spec.velocity
        body.angle, body.angular_velocity = spec.angle, spec.angular_velocity
        shape.elasticity, shape.friction = spec.elasticity, spec.friction
        labels[shape] = spec.id
        space.add(body, shape)
        pm_bodies.append(body)
    return space, labels, pm_bodies


def simulate(config: WorldConfig, bodies: list[Body]) -> tuple[np.ndarray, list[dict]]:
    """Run the scene; return world-space states ``(N, T, 5)`` [x, y, vx, vy, angle] and the impacts.

    States are sampled at frame times ``t = f / fps`` (frame 0 is the initial state). Each impact is a
    dict with ``time`` (s, refined within the substep from the penetration depth), ``objects`` (ids),
    ``with`` (``floor``/``wall_left``/``wall_right``/``ceiling``/``object``) and ``speed`` (px/s, normal
    approach speed).
    """
    space, labels, pm_bodies = _make_space(config, bodies)
    dt = 1.0 / (config.fps * config.substeps)
    recorder = _ImpactRecorder(labels, dt, config.min_impact_speed * config.px_per_m, config.contact_debounce)
    space.on_collision(begin=recorder.begin)
    states = np.zeros((len(bodies), config.num_frames, 5))
    step = 0
    for frame in range(config.num_frames):
        for index, body in enumerate(pm_bodies):
            states[index, frame] = (*body.position, *body.velocity, body.angle)
        if frame == config.num_frames - 1:
            break
        for _ in range(config.substeps):
            step += 1
            recorder.step_end = step * dt
            space.step(dt)
    recorder.contacts.sort(key=lambda c: (c["time"], c["objects"]))
    return states, recorder.contacts


class _ImpactRecorder:
    """pymunk ``begin`` handler: a new touch whose normal approach speed exceeds ``min_speed`` is an impact.

    ``begin`` runs once when two shapes start touching (again), so a resting contact costs nothing and
    makes no event. Chipmunk integrates positions before it detects collisions and integrates velocities
    after, so inside ``begin`` positions are at the end of the substep and velocities from before the impact.
    """

    def __init__(self, labels: dict, dt: float, min_speed: float, debounce: float) -> None:
        self.labels, self.dt, self.min_speed, self.debounce = labels, dt, min_speed, debounce
        self.step_end = 0.0
        self.contacts: list[dict] = []
        self._last: dict[tuple[str, str], float] = {}

    def begin(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data: object) -> None:
        shape_a, shape_b = arbiter.shapes
        points = arbiter.contact_point_set.points
        if not points:
            return
        point = (points[0].point_a + points[0].point_b) * 0.5
        relative = shape_a.body.velocity_at_world_point(point) - shape_b.body.velocity_at_world_point(point)
        approach = relative.dot(arbiter.normal)  # the normal points from shape_a to shape_b
        if approach < self.min_speed:
            return
        depth = max(0.0, -min(p.distance for p in points))
        time = max(self.step_end - self.dt, self.step_end - depth / approach)  # when the surfaces met
        label_a, label_b = self.labels[shape_a], self.labels[shape_b]
        pair = tuple(sorted((str(label_a), str(label_b))))
        if pair in self._last and time - self._last[pair] < self.debounce:
            return
        self._last[pair] = time
        ids = sorted(label for label in (label_a, label_b) if isinstance(label, int))
        other = next((label for label in (label_a, label_b) if isinstance(label, str)), "object")
        self.contacts.append({"time": time, "objects": ids, "with": other, "speed": approach})


# ---- ground truth ---------------------------------------------------------------------------------------
def ground_truth(config: WorldConfig, family: str, rng: np.random.Generator) -> dict:
    """Build and simulate one scene; return the physical part of the clip metadata (image coordinates).

    Keys: ``objects``, ``tracks``, ``contacts``, ``relations``, ``start``, ``scene`` (floor, walls,
    ``px_per_m``), ``gravity_px_s2``.
    """
    bodies = build_scene(config, family, rng)
    states, contacts = simulate(config, bodies)
    x, y, vx, vy, angle = world_to_image(*np.moveaxis(states, -1, 0), height=config.height)  # each (N, T)
    tracks = []
    for index, body in enumerate(bodies):
        c, s = np.abs(np.cos(angle[index])), np.abs(np.sin(angle[index]))
        h = body.half_extent
        # a square turned by `angle` spans h (|cos| + |sin|) along both axes
        ex = ey = h if body.shape == "circle" else h * (c + s)
        bbox = np.stack([x[index] - ex, y[index] - ey, x[index] + ex, y[index] + ey], axis=-1)
        tracks.append(
            {
                "id": body.id,
                "x": _rounded(x[index]),
                "y": _rounded(y[index]),
                "vx": _rounded(vx[index]),
                "vy": _rounded(vy[index]),
                "angle": _rounded(angle[index], 5),
                "bbox": _rounded(bbox),
            }
        )
    for contact in contacts:
        contact["frame"] = min(round(contact["time"] * config.fps), config.num_frames - 1)
        contact["time"] = round(contact["time"], 6)
        contact["speed"] = round(contact["speed"], 3)
    floor_y = world_to_image(0.0, float(config.floor_px), 0.0, 0.0, 0.0, config.height)[1]
    left, top = world_to_image(0.0, float(config.height), 0.0, 0.0, 0.0, config.height)[:2]
    right = world_to_image(float(config.width), 0.0, 0.0, 0.0, 0.0, config.height)[0]
    return {
        "gravity_px_s2": config.gravity_px,
        "objects": [body.to_meta() for body in bodies],
        "tracks": tracks,
        "contacts": [{k: c[k] for k in ("time", "frame", "objects", "with", "speed")} for c in contacts],
        "relations": relations(bodies, x[:, 0], y[:, 0]),
        "start": [_start(body.id, x[i, 0], y[i, 0], config) for i, body in enumerate(bodies)],
        "scene": {
            "floor_y": floor_y,
            "wall_left_x": left,
            "wall_right_x": right,
            "ceiling_y": top,
            "floor_top_row": config.height - config.floor_px,
            "px_per_m": config.px_per_m,
        },
    }


def relations(bodies: list[Body], x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Pairwise left of / right of / above / below facts, both directions, in image axes.

    A relation holds only when the centres are apart by at least the mean of the two extents, so that
    "left of" is something a viewer would also say.
    """
    facts = []
    for a, body_a in enumerate(bodies):
        for b, body_b in enumerate(bodies):
            if a == b:
                continue
            margin = 0.5 * (body_a.extent + body_b.extent)
            if x[a] < x[b] - margin:
                facts.append({"subject": body_a.id, "relation": "left of", "object": body_b.id})
            elif x[a] > x[b] + margin:
                facts.append({"subject": body_a.id, "relation": "right of", "object": body_b.id})
            if y[a] < y[b] - margin:
                facts.append({"subject": body_a.id, "relation": "above", "object": body_b.id})
            elif y[a] > y[b] + margin:
                facts.append({"subject": body_a.id, "relation": "below", "object": body_b.id})
    return facts


def _start(object_id: int, x: float, y: float, config: WorldConfig) -> dict:
    """Which third of the image the centre starts in (pixel centres at integers, so the edge is -0.5)."""
    fx, fy = (x + 0.5) / config.width, (y + 0.5) / config.height
    horizontal = "left" if fx < 1 / 3 else "right" if fx > 2 / 3 else "centre"
    vertical = "top" if fy < 1 / 3 else "bottom" if fy > 2 / 3 else "middle"
    return {"id": object_id, "horizontal": horizontal, "vertical": vertical}


def _rounded(values: np.ndarray, decimals: int = 4) -> list:
    """Nested float lists, rounded so the JSON stays small (1e-4 px is far below what rendering resolves)."""
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()
