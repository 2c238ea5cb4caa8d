"""A weight-free captioner for the synthetic world that reads only the pixels and the sound of a clip.

:class:`PixelCaptioner` never looks at the ground truth in ``CaptionInput.meta`` (it uses only the clip's
frames, audio, fps and sample rate). What it reads, and how:

* objects: the colour tracker of :mod:`eval.tracking` on the palette of the world
  (:data:`data_pipelines.synthetic.PALETTE`); a colour is an object when it is found in at least
  :data:`MIN_VISIBLE` of the frames with a median mask of at least :data:`MIN_AREA_PX` pixels. Several
  colours seen are several objects (the world never repeats a colour in a clip).
* shape: :func:`square_harmonic`, the 4-fold angular harmonic of the object's luma (a square's four
  corners), which tells the world's 3 px boxes from its 3 px balls, whose colour masks are pixel blobs
  after H.264; it also beat :func:`eval.objects.classify_shape`'s mask rule on the 5 px objects of the
  quickstart slice (89/89 against 86/89 on the benchmark's clips), which remains the fallback when the
  harmonic cannot be measured.
* size: the mask's equivalent radius plus :data:`RIM_PX` (the anti-aliased rim the tracker leaves out), the
  nearest of the world's size classes (``sizes`` in metres times ``height / world_height_m``, the world's
  defaults unless given).
* start: the first frame's centroid in thirds of the image ("left"/"centre"/"right", "top"/"middle"/
  "bottom"), as the world's captions use them.
* floor: the grey band at the bottom of the frame (``FLOOR_RGB``), found in the first frame.
* motion, per object: on the floor and still at first -> it rests, unless it later moves by more than
  ``max(2, r / 2)`` px (then it is pushed or knocked, by the object that touched it); on the floor and
  moving sideways -> it slides (a box) or rolls (a ball); in the air with little sideways speed
  (< :data:`SIDEWAYS` of the width per second) -> it falls; in the air moving sideways -> it is thrown, or,
  when two such objects fly at each other, both are launched. Directions from the sign of the first frames'
  horizontal velocity.
* bounces: per moving object, frames near the floor where the downward velocity stops or reverses beyond
  gravity (:data:`FLOOR_DV` px/s).
* walls and hits: sideways reversals at the image edges; two masks coming within 2 px of each other.
* sounds: :func:`eval.av_sync.audio_onsets` counts and times the impacts (onsets in the last
  :data:`END_GUARD_S` of the stream are codec artefacts and dropped). Seen and heard impacts are made to
  agree (:func:`_reconcile`): when anything is heard, a seen impact with no onset within
  :data:`MATCH_FRAMES` frames is dropped, and an onset that no seen impact explains becomes a floor hit of
  the moving object bouncing near the floor then (the last bounces are a pixel high and only heard); a
  clip with no onset at all (silent, or silenced) keeps what is seen. The pitch of each impact (the world's
  modal sounds: rubber low, wood middle, metal high, scaled by 1 / radius) picks the world's sound word. No
  onset: "It is silent." (or a hum when the level shows background noise); no audio track: nothing is said
  about sound.
* backdrop: the world's backdrop colour nearest the dark pixels of the first frame (named now and then).

Its limits, measured by ``benchmarks/pixel_captioner.py``: impacts closer than ~30 ms (two objects landing
together) are one onset, so the impact count follows what the ear can separate rather than the simulator's
contact list, and a bounce count may be one off; materials are only as good as one pitch per impact (two
objects ringing together); the world's loudness words and which object hit which are not attempted beyond
the first touch.

It returns the dense caption in ``text`` and the forms ``dense``, ``short`` ("a red ball on the left
falls") and ``structured`` ("objects: red ball (left, falls, bounces 2); sounds: 2 impacts at 0.41 s,
0.93 s"), and raises :class:`CaptionError` when no object is found. Phrasing is drawn from the world's own
vocabulary (:mod:`data_pipelines.synthetic.captions`) with a random stream seeded by the clip's key, so the
same clip always gets the same words.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from data_pipelines.synthetic.captions import (
    _VERBS,
    NOUNS,
    SIZE_WORDS,
    SOUND_WORDS,
    _article,
    _join,
    number_word,
)
from data_pipelines.synthetic.config import SIZE_NAMES, WorldConfig
from data_pipelines.synthetic.palette import BACKGROUNDS, FLOOR_RGB, PALETTE
from data_pipelines.synthetic.sound import MATERIAL_SOUNDS, REFERENCE_RADIUS_M
from eval.av_sync import audio_onsets
from eval.objects import classify_shape
from eval.tracking import Track, track_colors
from recaption.base import Caption, Captioner, CaptionError, CaptionInput

MIN_VISIBLE, MIN_AREA_PX = 0.5, 4.0
"""A colour is an object when seen in this fraction of frames with at least this median mask area."""
RIM_PX = 0.4
"""The tracker's mask leaves out the anti-aliased rim: true radius ~ equivalent mask radius + this."""
SIDEWAYS = 0.12
"""Initial horizontal speed, as a fraction of the width per second, above which an object moves sideways."""
FLOOR_GAP_PX = 2.0
"""An object whose mask ends within this many px of the floor band stands on the floor."""
FLOOR_DV = 30.0
"""Vertical velocity change beyond gravity (px/s) near the floor that counts as a seen bounce."""
WALL_SPEED = 15.0
"""Horizontal speed (px/s) on both sides of a sideways reversal at the image edge (a wall hit)."""
BOX_HARMONIC = 0.12
""":func:`square_harmonic` at or above which an object is a box (on 80
small objects of seeds 5000-5039 after H.264: balls 0.010-0.093, boxes 0.142-0.268)."""
MIN_BOUNCE_MOTION = 8.0
"""Vertical speed (px/s) near an onset for an object to be the one bouncing there."""
END_GUARD_S = 0.025
"""Onsets this close to the end of the sound are dropped (end-of-stream artefacts, see ``read``)."""
HUM_RMS = 5e-4
"""Audio RMS above which a clip without impacts has an audible hum."""
MATCH_FRAMES = 1.5
"""An audio onset and a seen impact closer than this many frames are one event."""
GRAVITY = 9.81


@dataclass
class SeenObject:
    """One object as the pixels show it."""

    color: str
    track: Track
    shape: str  # "circle" | "box"
    size: str
    radius_px: float
    horizontal: str  # "left" | "centre" | "right"
    vertical: str  # "top" | "middle" | "bottom"
    role: str = "resting"  # dropped | thrown | slid | launched | resting | pushed | knocked
    direction: str | None = None
    hitter: str | None = None  # colour of the first object that touched a resting one
    floor_hits: list[float] = field(default_factory=list)  # seconds
    walls: list[tuple[float, str]] = field(default_factory=list)  # (seconds, "left"/"right")
    hits: list[tuple[float, str]] = field(default_factory=list)  # (seconds, other colour)

    @property
    def moving(self) -> bool:
        return self.role not in ("resting",)


@dataclass
class Scene:
    """What the captioner read from one clip."""

    objects: list[SeenObject]
    onsets: np.ndarray  # seconds; empty without sound
    has_audio: bool
    hum: bool
    materials: list[str | None]  # per onset, from its pitch
    background: str | None


class PixelCaptioner(Captioner):
    """Captions a synthetic-world clip from its frames and sound only (see the module docstring).

    Args:
        sizes: the world's size classes in metres (``WorldConfig.sizes``; the default world's if None).
        world_height_m: metres the image spans vertically (``WorldConfig.world_height_m``).
        seed: mixed with each clip's key to draw the phrasing.
    """

    name = "pixel"
    version = "1"

    def __init__(
        self, sizes: dict[str, float] | None = None, world_height_m: float = 2.0, seed: int = 0
    ) -> None:
        sizes = dict(sizes) if sizes is not None else WorldConfig().sizes
        if set(sizes) != set(SIZE_NAMES):
            raise ValueError(f"sizes must have exactly the keys {list(SIZE_NAMES)}, got {sorted(sizes)}")
        if not all(float(v) > 0 for v in sizes.values()) or not world_height_m > 0:
            raise ValueError(f"sizes and world_height_m must be > 0, got {sizes}, {world_height_m}")
        self.sizes = {k: float(v) for k, v in sizes.items()}
        self.world_height_m = float(world_height_m)
        self.seed = int(seed)

    def describe(self) -> dict:
        return {**super().describe(), "sizes": self.sizes, "world_height_m": self.world_height_m}

    def caption_batch(self, clips: list[CaptionInput]) -> list[Caption]:
        return [self._caption_one(clip) for clip in clips]

    def _caption_one(self, clip: CaptionInput) -> Caption:
        scene = self.read(clip)
        rng = np.random.default_rng([self.seed, zlib.crc32(clip.key.encode())])
        dense = dense_caption(scene, rng)
        return Caption(
            text=dense, forms={"dense": dense, "short": short_caption(scene), "structured": structured(scene)}
        )

    # ---- reading the clip ---------------------------------------------------------------------------
    def read(self, clip: CaptionInput) -> Scene:
        """Everything the caption says, read from ``clip.frames`` and ``clip.audio``."""
        frames, fps = clip.frames, float(clip.fps)
        num_frames, height, width, _ = frames.shape
        tracks = track_colors(frames, dict(PALETTE))
        found = [
            tr
            for tr in tracks.values()
            if tr.visible.mean() >= MIN_VISIBLE and np.median(tr.area[tr.visible]) >= MIN_AREA_PX
        ]
        if not found:
            raise CaptionError(f"clip {clip.key!r}: no object of the world's palette is seen")
        floor_top = _floor_top(frames[0])
        px_per_m = height / self.world_height_m
        classes = {name: self.sizes[name] * px_per_m for name in SIZE_NAMES}
        objects = [_seen_object(tr, frames, width, height, classes) for tr in found]
        _fill_motion(objects, fps, width, floor_top, GRAVITY * px_per_m)
        has_audio = clip.audio is not None and clip.sample_rate > 0 and clip.audio.size > 0
        onsets, materials, hum = np.zeros(0), [], False
        if has_audio:
            audio = np.asarray(clip.audio, dtype=np.float32)
            audio = audio.mean(axis=0, keepdims=True) if audio.ndim == 2 else audio[None]
            onsets = audio_onsets(audio, clip.sample_rate)
            # the last analysis frames see the end of the stream (AAC's last packet, zero padding) as a
            # jump: an onset there is no impact
            onsets = onsets[onsets < audio.shape[-1] / clip.sample_rate - END_GUARD_S]
            hum = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > HUM_RMS
            _reconcile(objects, onsets, fps, floor_top)
            materials = [
                _material(audio[0], clip.sample_rate, t, _owner(objects, t, fps), px_per_m) for t in onsets
            ]
        _settle_resting(objects)
        objects.sort(key=lambda o: (not o.moving, _start_x(o)))
        return Scene(
            objects=objects,
            onsets=onsets,
            has_audio=has_audio,
            hum=hum,
            materials=materials,
            background=_background(frames[0], floor_top),
        )


# ---- per-object measurements ------------------------------------------------------------------------------
def _floor_top(frame: np.ndarray) -> int:
    """First row of the grey floor band (counted from the bottom: rows whose median is the floor colour)."""
    height = frame.shape[0]
    distance = np.linalg.norm(np.median(frame.astype(np.float32), axis=1) - np.asarray(FLOOR_RGB), axis=-1)
    top = height
    while top > 0 and distance[top - 1] < 30.0:
        top -= 1
    return top if top < height else height - max(2, round(0.06 * height))


def _filled(values: np.ndarray) -> np.ndarray:
    """NaNs replaced by linear interpolation (ends held)."""
    t = np.arange(len(values))
    ok = np.isfinite(values)
    return np.interp(t, t[ok], values[ok]) if ok.any() else np.zeros(len(values))


def square_harmonic(frames: np.ndarray, tr: Track, radius: float, max_frames: int = 12) -> float:
    """How square an object looks: the 4-fold angular harmonic of its luma coverage (median over frames).

    Per frame, ``alpha`` is the pixel's luma between the local backdrop's (median of a ring around the
    object) and the palette colour's, clipped to [0, 1], within ``radius + 1.6`` px of the centroid; with
    ``w = alpha * r^2`` about the alpha-weighted centre, the value is ``|sum w e^(4 i phi)| / sum w``: ~0 for
    a disc, ~0.2 for a square at any angle. It reads luma, which 4:2:0 H.264 keeps at full resolution, and
    the anti-aliased rim the colour mask leaves out, so it still tells the world's small (3 px) boxes from
    its small balls.
    """
    weights = np.asarray([0.299, 0.587, 0.114], np.float32)
    y_obj = float(np.asarray(tr.rgb, np.float32) @ weights)
    num_frames, height, width, _ = frames.shape
    rows, cols = np.mgrid[0:height, 0:width]
    values = []
    for t in np.flatnonzero(tr.visible)[:: max(1, int(tr.visible.sum()) // max_frames)]:
        frame = frames[t].astype(np.float32)
        luma = frame @ weights
        d = np.hypot(cols - tr.x[t], rows - tr.y[t])
        ring = (d > radius + 2.5) & (d < radius + 5.0) & (frame.max(axis=-1) < 110)  # backdrop pixels only
        y_bg = float(np.median(luma[ring])) if ring.any() else 20.0
        alpha = np.clip((luma - y_bg) / max(y_obj - y_bg, 1.0), 0.0, 1.0) * (d < radius + 1.6)
        if alpha.sum() <= 0:
            continue
        cx, cy = (alpha * cols).sum() / alpha.sum(), (alpha * rows).sum() / alpha.sum()
        dx, dy = cols - cx, rows - cy
        w = alpha * (dx**2 + dy**2)
        values.append(abs((w * np.exp(4j * np.arctan2(dy, dx))).sum()) / max(w.sum(), 1e-9))
    return float(np.median(values)) if values else float("nan")


def _seen_object(
    tr: Track, frames: np.ndarray, width: int, height: int, classes: dict[str, float]
) -> SeenObject:
    visible = tr.visible
    radius = float(np.sqrt(np.median(tr.area[visible]) / math.pi)) + RIM_PX
    size = min(classes, key=lambda name: abs(classes[name] - radius))
    harmonic = square_harmonic(frames, tr, radius)
    if math.isfinite(harmonic):
        shape = "box" if harmonic >= BOX_HARMONIC else "circle"
    else:  # no frame to measure it on: the colour mask's rule, else a ball
        shape = classify_shape(tr, np.ones(len(visible), dtype=bool)) or "circle"
    first = int(np.flatnonzero(visible)[0])
    fx, fy = (tr.x[first] + 0.5) / width, (tr.y[first] + 0.5) / height
    horizontal = "left" if fx < 1 / 3 else "right" if fx > 2 / 3 else "centre"
    vertical = "top" if fy < 1 / 3 else "bottom" if fy > 2 / 3 else "middle"
    return SeenObject(tr.color, tr, shape, size, radius, horizontal, vertical)


def _touch_frames(a: Track, b: Track) -> np.ndarray:
    """Frames where the two masks come within 2 px of each other."""
    out = np.zeros(len(a.x), dtype=bool)
    for t in np.flatnonzero(a.visible & b.visible):
        out[t] = (ndimage.binary_dilation(a.masks[t], iterations=2) & b.masks[t]).any()
    return out


def _fill_motion(objects: list[SeenObject], fps: float, width: int, floor_top: int, g: float) -> None:
    """Role, direction, seen bounces, wall and object hits of every object (module docstring); ``g`` is
    gravity in px/s^2."""
    starts = {}
    for obj in objects:
        tr = obj.track
        x, y = _filled(tr.x), _filled(tr.y)
        bottom = _filled(tr.bbox[:, 3])
        gap = floor_top - 0.5 - bottom  # px between the mask's lower edge and the floor
        vx, vy = np.diff(x) * fps, np.diff(y) * fps  # (T-1,) px/s, y down
        k = min(2, len(vx))
        vx0, vy0 = float(np.mean(vx[:k])) if k else 0.0, float(np.mean(vy[:k])) if k else 0.0
        on_floor = gap[0] < FLOOR_GAP_PX and abs(vy0) < 0.5 * fps
        sideways = abs(vx0) > SIDEWAYS * width
        starts[obj.color] = (on_floor, sideways, vx0, x)
        obj.direction = ("right" if vx0 > 0 else "left") if sideways else None
        if on_floor:
            obj.role = "slid" if sideways else "resting"
        else:
            obj.role = "thrown" if sideways else "dropped"
        # bounces on the floor: downward motion stopped or reversed near the floor
        if obj.role != "resting" and len(vy) >= 2:
            a, b = vy[:-1], vy[1:]  # velocity into and out of frame t = 1..T-2
            jump = (a - b + g / fps) >= FLOOR_DV
            near = gap[1:-1] < np.maximum(FLOOR_GAP_PX + 1.0, np.abs(a) / fps + 1.0)
            obj.floor_hits = _events(np.flatnonzero(jump & near & (a > 0)) + 1, fps)
        # walls: a sideways reversal at an image edge
        if len(vx) >= 2:
            a, b = vx[:-1], vx[1:]
            rev = (np.sign(a) != np.sign(b)) & (np.abs(a) >= WALL_SPEED) & (np.abs(b) >= WALL_SPEED)
            x0, x1 = _filled(tr.bbox[:, 0])[1:-1], _filled(tr.bbox[:, 2])[1:-1]
            for t in _events(np.flatnonzero(rev & (x0 < 2.5)) + 1, fps):
                obj.walls.append((t, "left"))
            for t in _events(np.flatnonzero(rev & (x1 > width - 2.5)) + 1, fps):
                obj.walls.append((t, "right"))
    # launched pairs: two objects in the air flying at each other
    flying = [o for o in objects if o.role == "thrown"]
    for a_obj in flying:
        for b_obj in flying:
            xa, xb = starts[a_obj.color][3][0], starts[b_obj.color][3][0]
            if xa < xb and starts[a_obj.color][2] > 0 > starts[b_obj.color][2]:
                a_obj.role = b_obj.role = "launched"
    # object-object hits: masks start touching
    for i, a_obj in enumerate(objects):
        for b_obj in objects[i + 1 :]:
            touch = _touch_frames(a_obj.track, b_obj.track)
            begins = np.flatnonzero(touch & ~np.concatenate([[False], touch[:-1]]))
            for t in _events(begins, fps):
                a_obj.hits.append((t, b_obj.color))
                b_obj.hits.append((t, a_obj.color))
    for obj in objects:
        obj.hits.sort()


def _settle_resting(objects: list[SeenObject]) -> None:
    """A resting object that moved by more than ``max(2, r / 2)`` px was pushed (knocked, when something
    touched it first); one that stayed but was touched was hit."""
    for obj in objects:
        if obj.role != "resting":
            continue
        x = _filled(obj.track.x)
        moved = x[-1] - x[0]
        obj.hitter = obj.hits[0][1] if obj.hits else None
        if abs(moved) > max(2.0, 0.5 * obj.radius_px):
            obj.role = "knocked" if obj.hitter else "pushed"
            obj.direction = "right" if moved > 0 else "left"


def _events(frames: np.ndarray, fps: float, within: int = 2) -> list[float]:
    """Frame indices -> event times (s), frames closer than ``within`` to the previous kept one merged."""
    out: list[int] = []
    for f in np.sort(frames):
        if not out or f - out[-1] > within:
            out.append(int(f))
    return [f / fps for f in out]


def _reconcile(objects: list[SeenObject], onsets: np.ndarray, fps: float, floor_top: int) -> None:
    """Make the seen impacts agree with the heard ones.

    With at least one onset, a seen impact that no onset is near (:data:`MATCH_FRAMES`) is dropped (the
    world sounds every impact; a tumbling box rocking on a corner or two masks brushing is none). An onset
    that no seen impact explains becomes a floor hit of the moving object that is bouncing near the floor
    then (the most vertical motion within +-3 frames; the last bounces are a pixel high). Without any onset
    (a silent or silenced clip) the seen impacts stay: the bounces are still seen.
    """
    if len(onsets) == 0:
        return
    tolerance = MATCH_FRAMES / fps

    def heard(t: float) -> bool:
        return bool(np.any(np.abs(onsets - t) <= tolerance))

    for obj in objects:
        obj.floor_hits = [t for t in obj.floor_hits if heard(t)]
        obj.walls = [(t, w) for t, w in obj.walls if heard(t)]
        obj.hits = [(t, o) for t, o in obj.hits if heard(t)]
    num_frames = len(objects[0].track.x)
    for t in onsets:
        if _owner(objects, t, fps) is not None:
            continue
        frame = min(int(round(t * fps)), num_frames - 1)
        lo, hi = max(frame - 3, 0), min(frame + 4, num_frames)
        best, best_motion = None, MIN_BOUNCE_MOTION
        for obj in objects:
            tr = obj.track
            if obj.role in ("resting", "slid") or not tr.visible[frame]:
                continue
            if floor_top - 0.5 - tr.bbox[frame, 3] > FLOOR_GAP_PX + 2.0:
                continue
            motion = float(np.nanmax(np.abs(np.diff(_filled(tr.y)[lo:hi])))) * fps if hi - lo > 1 else 0.0
            if motion > best_motion:
                best, best_motion = obj, motion
        if best is not None:
            best.floor_hits = sorted([*best.floor_hits, float(t)])


def _owner(objects: list[SeenObject], t: float, fps: float) -> SeenObject | None:
    """The object whose seen impact is nearest to onset time ``t`` (within :data:`MATCH_FRAMES`)."""
    best, best_d = None, MATCH_FRAMES / fps
    for obj in objects:
        for e in (*obj.floor_hits, *(w for w, _ in obj.walls), *(h for h, _ in obj.hits)):
            if abs(e - t) <= best_d:
                best, best_d = obj, abs(e - t)
    return best


def _material(
    audio: np.ndarray, sample_rate: int, t: float, owner: SeenObject | None, px_per_m: float
) -> str | None:
    """The material whose fundamental (scaled by 1 / radius) is nearest the impact's strongest pitch."""
    start = int(t * sample_rate)
    window = audio[start : start + int(0.06 * sample_rate)].astype(np.float64)
    if len(window) < 64:
        return None
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    freqs = np.fft.rfftfreq(len(window), 1.0 / sample_rate)
    band = freqs >= 60.0
    if not band.any() or spectrum[band].max() <= 0:
        return None
    peak = float(freqs[band][np.argmax(spectrum[band])])
    radius_m = owner.radius_px / px_per_m if owner is not None else REFERENCE_RADIUS_M
    scaled = peak * radius_m / REFERENCE_RADIUS_M  # what the medium reference object would ring at
    return min(MATERIAL_SOUNDS, key=lambda m: abs(math.log(scaled / MATERIAL_SOUNDS[m].base_hz)))


def _background(frame: np.ndarray, floor_top: int) -> str | None:
    """The backdrop's name: the world's backdrop nearest the median of the rows above the floor."""
    above = frame[: max(floor_top, 1)].reshape(-1, 3).astype(np.float32)
    dark = above[above.max(axis=1) < 110]  # backdrops have no channel above ~100; objects are bright
    if len(dark) == 0:
        return None
    median = np.median(dark, axis=0)
    return min(BACKGROUNDS, key=lambda n: float(np.linalg.norm(median - np.asarray(BACKGROUNDS[n]))))


# ---- writing ----------------------------------------------------------------------------------------------
_WHERE = {
    ("side", "top"): ("at the top {h}", "in the upper {h}", "near the top {h}"),
    ("side", "middle"): ("on the {h}", "on the {h} side", "at the {h}"),
    ("side", "bottom"): ("at the bottom {h}", "in the lower {h}"),
    ("centre", "top"): ("at the top", "near the top", "at the top centre"),
    ("centre", "middle"): ("in the centre", "in the middle"),
    ("centre", "bottom"): ("at the bottom", "at the bottom centre"),
}
_SHORT_VERB = {
    "dropped": "falls",
    "thrown": "is thrown to the {d}",
    "slid_box": "slides to the {d}",
    "slid_circle": "rolls to the {d}",
    "launched": "moves to the {d}",
    "knocked": "is knocked to the {d}",
    "pushed": "is pushed to the {d}",
    "resting": "rests on the floor",
}
_STRUCT_VERB = {
    "dropped": "falls",
    "thrown": "thrown {d}",
    "slid_box": "slides {d}",
    "slid_circle": "rolls {d}",
    "launched": "moves {d}",
    "knocked": "pushed {d}",
    "pushed": "pushed {d}",
    "resting": "rests",
}


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _start_x(obj: SeenObject) -> float:
    return float(obj.track.x[np.flatnonzero(obj.track.visible)[0]])


def _verb_key(obj: SeenObject) -> str:
    return f"slid_{obj.shape}" if obj.role == "slid" else obj.role


def _noun(obj: SeenObject) -> str:
    return NOUNS[obj.shape][0]


def _where(obj: SeenObject, rng: np.random.Generator) -> str:
    side = "centre" if obj.horizontal == "centre" else "side"
    return _pick(rng, _WHERE[(side, obj.vertical)]).format(h=obj.horizontal)


def _sound_word(material: str | None, obj: SeenObject | None) -> str:
    size = obj.size if obj is not None else "medium"
    return SOUND_WORDS[(material or "rubber", size)][0] if material else "impact"


def dense_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption in the world's style (the grammar of :mod:`data_pipelines.synthetic.captions`)."""
    nouns = {o.color: _pick(rng, NOUNS[o.shape]) for o in scene.objects}
    named: set[str] = set()
    by_color = {o.color: o for o in scene.objects}

    def name(color: str) -> str:
        if color in named:
            return f"the {color} {nouns[color]}"
        named.add(color)
        words = [_pick(rng, SIZE_WORDS[by_color[color].size])] if rng.random() < 0.85 else []
        words += [color, nouns[color]]
        return f"{_article(words[0])} {' '.join(words)}"

    sentences = []
    for obj in scene.objects:
        key = _verb_key(obj)
        if obj.role in ("knocked", "pushed") or (obj.role == "resting" and obj.hitter):
            key = "knocked" if obj.role == "knocked" else "pushed" if obj.role == "pushed" else "hit"
        where = _where(obj, rng) if obj.color not in named else ""  # where it starts: on first mention only
        subject = name(obj.color)
        template = _pick(rng, _VERBS[key])
        other = name(obj.hitter) if obj.hitter and "{other}" in template else ""
        verb = template.format(d=obj.direction, other=other)
        timed: list[tuple[float, str]] = []
        if obj.floor_hits and obj.role not in ("resting",):
            n = len(obj.floor_hits)
            options = (
                ("lands on the floor", "hits the floor", "lands")
                if n == 1
                else ("bounces {n} times", "hits the floor {n} times", "bounces on the floor {n} times")
            )
            timed.append(
                (
                    obj.floor_hits[0],
                    _pick(rng, options).format(n=number_word(n)).replace("two times", "twice"),
                )
            )
        for t, side in obj.walls[:1]:
            timed.append((t, _pick(rng, ("bounces off the {s} wall", "hits the {s} wall")).format(s=side)))
        for t, other_color in obj.hits:
            if (
                other_color == obj.hitter
                or other_color in named
                and by_color[other_color].hitter == obj.color
            ):
                continue
            timed.append(
                (
                    t,
                    _pick(rng, ("hits {o}", "bumps into {o}", "collides with {o}")).format(
                        o=name(other_color)
                    ),
                )
            )
            break
        clauses = [c for _, c in sorted(timed)]
        if obj.role == "slid":
            clauses.append(_slide_ending(obj, rng))
        body = _join([verb, *(c for c in clauses if c)])
        if where and rng.random() < 0.3:
            sentence = f"{where}, {subject} {body}."
        else:
            sentence = f"{subject} {where} {body}." if where else f"{subject} {body}."
        sentences.append(sentence[0].upper() + sentence[1:])
    if len(scene.objects) >= 2 and rng.random() < 0.65:
        left, right = sorted(scene.objects[:2], key=_start_x)
        if _start_x(right) - _start_x(left) > 0.5 * (left.radius_px + right.radius_px):
            a, b = f"{left.color} {nouns[left.color]}", f"{right.color} {nouns[right.color]}"
            sentences.append(f"The {a} is to the left of the {b}.")
    sentences.append(_sound_sentence(scene, rng))
    if scene.background and rng.random() < 0.3:
        sentences.append(
            _pick(
                rng, ("It all happens against a {b} background.", "The scene is set on a {b} background.")
            ).format(b=scene.background)
        )
    return " ".join(s for s in sentences if s)


def _slide_ending(obj: SeenObject, rng: np.random.Generator) -> str:
    """ "comes to a stop" / "slows down" / "" from the last frames' speed against the first frames'."""
    x = _filled(obj.track.x)
    if len(x) < 4:
        return ""
    start, end = abs(x[2] - x[0]) / 2, abs(x[-1] - x[-3]) / 2  # px per frame
    if end < max(0.05 * start, 0.125):  # the world's rule: below 5 % or 3 px/s (0.125 px/frame at 24 fps)
        return _pick(rng, ("comes to a stop", "stops", "slows to a halt"))
    if end < 0.6 * start:
        return _pick(rng, ("slows down", "gradually slows down", "loses speed"))
    return ""


def _sound_sentence(scene: Scene, rng: np.random.Generator) -> str:
    if not scene.has_audio:
        return ""
    if len(scene.onsets) == 0:
        if scene.hum:
            return _pick(rng, ("Only a low hum can be heard.", "Apart from a faint rumble, it is silent."))
        return _pick(rng, ("It is silent.", "Nothing makes a sound."))
    groups: dict[str, int] = {}
    for t, material in zip(scene.onsets, scene.materials):
        word = _sound_word(material, None if material is None else _nearest_owner(scene, t))
        groups[word] = groups.get(word, 0) + 1
    parts = [f"{_article(w)} {w}" if n == 1 else f"{number_word(n)} {w}s" for w, n in groups.items()]
    first = next(iter(groups.values()))
    return _pick(rng, ("You hear {s}.", "There {v} {s}.", "The soundtrack has {s}.")).format(
        s=_join(parts), v="is" if first == 1 else "are"
    )


def _nearest_owner(scene: Scene, t: float) -> SeenObject | None:
    """The object with the seen or attributed impact nearest to ``t`` (None when nothing was seen)."""
    events = [
        (abs(e - t), i)
        for i, obj in enumerate(scene.objects)
        for e in (*obj.floor_hits, *(w for w, _ in obj.walls), *(h for h, _ in obj.hits))
    ]
    return scene.objects[min(events)[1]] if events else None


def short_caption(scene: Scene) -> str:
    """ "a red ball on the left falls" for each moving object (every object if none moves)."""
    shown = [o for o in scene.objects if o.moving] or scene.objects
    parts = []
    for obj in shown:
        where = "in the centre" if obj.horizontal == "centre" else f"on the {obj.horizontal}"
        verb = _SHORT_VERB[_verb_key(obj)].format(d=obj.direction)
        parts.append(f"{_article(obj.color)} {obj.color} {_noun(obj)} {where} {verb}")
    return _join(parts)


def structured(scene: Scene) -> str:
    """ "objects: red ball (left, falls, bounces 2); sounds: 2 impacts at 0.41 s, 0.93 s" """
    objects = []
    for obj in scene.objects:
        fields = [obj.horizontal, _STRUCT_VERB[_verb_key(obj)].format(d=obj.direction)]
        if obj.floor_hits and obj.moving:
            fields.append(f"bounces {len(obj.floor_hits)}")
        objects.append(f"{obj.color} {_noun(obj)} ({', '.join(fields)})")
    if not scene.has_audio:
        sounds = "no audio"
    elif len(scene.onsets) == 0:
        sounds = "none"
    else:
        n = len(scene.onsets)
        times = ", ".join(f"{t:.2f} s" for t in scene.onsets)
        sounds = f"{n} impact{'s' if n != 1 else ''} at {times}"
    return f"objects: {', '.join(objects)}; sounds: {sounds}"
