"""data_pipelines.synthetic: config validation, determinism, scene families, physics and contact events."""

import functools
import json
import math

import numpy as np
import pytest

from data_pipelines.synthetic import FAMILIES, PALETTE, WorldConfig, generate_clip, world_to_image
from data_pipelines.synthetic.world import build_scene, simulate

SCHEMA_KEYS = {
    "seed",
    "family",
    "fps",
    "num_frames",
    "width",
    "height",
    "duration",
    "sample_rate",
    "gravity_px_s2",
    "background",
    "objects",
    "tracks",
    "contacts",
    "relations",
    "start",
    "caption",
}
OBJECT_KEYS = {
    "id",
    "shape",
    "color",
    "rgb",
    "size",
    "radius_px",
    "half_extent_px",
    "mass",
    "elasticity",
    "friction",
    "material",
}
TRACK_KEYS = {"id", "x", "y", "vx", "vy", "angle", "bbox"}
CONTACT_KEYS = {"time", "frame", "objects", "with", "speed"}


@pytest.fixture(scope="module")
def config():
    return WorldConfig()


@functools.cache
def default_clip(seed: int, family: str | None = None):
    """Clips of the default world, made once per test session (several tests look at the same ones)."""
    return generate_clip(WorldConfig(), seed, family)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"fps": 0}, "fps"),
        ({"fps": -24}, "fps"),
        ({"duration": 0}, "duration"),
        ({"width": 63}, "width"),
        ({"height": 16}, "height"),
        ({"families": ("fall", "bounce")}, "families"),
        ({"families": ()}, "families"),
        ({"max_objects": 4}, "max_objects"),
        ({"min_objects": 0}, "min_objects"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"sizes": {"small": -0.1, "medium": 0.15, "large": 0.2}}, "sizes['small']"),
        ({"sizes": {"small": 0.1, "medium": 0.15, "large": 0.9}}, "sizes['large']"),
        ({"sizes": {"small": 0.1, "large": 0.2}}, "sizes"),
        ({"shapes": ("triangle",)}, "shapes"),
        ({"materials": ("glass",)}, "materials"),
        ({"background": "stars"}, "background"),
        ({"gravity": 0}, "gravity"),
        ({"substeps": 0}, "substeps"),
        ({"ambience_level": -0.1}, "ambience_level"),
        ({"min_impact_speed": -1.0}, "min_impact_speed"),
        ({"families": ("collide",), "max_objects": 1}, "max_objects"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"^{__import__('re').escape(field)}"):
        WorldConfig(**overrides)


def test_error_message_states_the_bad_value():
    with pytest.raises(ValueError, match=r"fps must be > 0, got 0"):
        WorldConfig(fps=0)
    with pytest.raises(ValueError, match="unknown scene family 'bounce'"):
        WorldConfig(families=("bounce",))
    with pytest.raises(ValueError, match="unknown WorldConfig field"):
        WorldConfig.from_dict({"fsp": 24})
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        generate_clip(WorldConfig(), -1)


def test_config_round_trips_through_dict(config):
    assert WorldConfig.from_dict(config.to_dict()) == config
    json.dumps(config.to_dict())


def test_same_seed_same_clip_different_seed_different_clip(config):
    a, b, c = generate_clip(config, 11), generate_clip(config, 11), generate_clip(config, 12)
    np.testing.assert_array_equal(a.video, b.video)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.meta == b.meta and a.caption == b.caption and a.key == b.key
    assert a.key != c.key and not np.array_equal(a.video, c.video)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_generates_a_clip_with_the_schema(config, family):
    clip = generate_clip(config, 5, family)
    meta = clip.meta
    assert SCHEMA_KEYS <= set(meta)
    json.loads(json.dumps(meta))  # JSON-serialisable
    assert meta["family"] == family and meta["sample_rate"] == 16000
    assert (
        clip.video.shape == (config.num_frames, config.height, config.width, 3)
        and clip.video.dtype == np.uint8
    )
    assert clip.audio.shape == (1, round(meta["duration"] * 16000)) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0
    assert meta["gravity_px_s2"] == pytest.approx(config.gravity * config.height / config.world_height_m)
    assert 1 <= len(meta["objects"]) <= 3
    colors = [obj["color"] for obj in meta["objects"]]
    assert len(set(colors)) == len(colors)
    for obj, track in zip(meta["objects"], meta["tracks"]):
        assert OBJECT_KEYS <= set(obj) and TRACK_KEYS <= set(track)
        assert tuple(obj["rgb"]) == PALETTE[obj["color"]]
        assert all(len(track[k]) == config.num_frames for k in TRACK_KEYS - {"id"})
    for contact in meta["contacts"]:
        assert CONTACT_KEYS <= set(contact)
        assert contact["with"] in ("floor", "wall_left", "wall_right", "ceiling", "object")
        assert contact["frame"] == min(round(contact["time"] * meta["fps"]), meta["num_frames"] - 1)
        assert len(contact["objects"]) == (2 if contact["with"] == "object" else 1)
    assert clip.caption and clip.caption == meta["caption"]
    for obj in meta["objects"]:
        assert obj["color"] in clip.caption


def test_family_behaviour(config):
    """What each recipe promises, checked on the tracks of many seeds."""
    for seed in range(12):
        static = default_clip(seed, "static").meta
        assert static["contacts"] == []
        for track in static["tracks"]:
            assert np.ptp(track["x"]) < 0.05 and np.ptp(track["y"]) < 0.05
        collide = default_clip(seed, "collide").meta
        assert any(c["with"] == "object" for c in collide["contacts"])
        thrown = default_clip(seed, "throw").meta["tracks"][0]
        assert thrown["vy"][0] < 0 and abs(thrown["vx"][0]) > 0  # up (image y grows down) and sideways
        fall = default_clip(seed, "fall").meta
        assert all(np.argmax(t["y"]) > 0 for t in fall["tracks"])  # everything comes down
        slide = default_clip(seed, "slide").meta["tracks"][0]
        assert abs(slide["vx"][0]) > 0 and slide["vy"][0] == 0


def test_world_to_image_is_the_one_flip():
    x, y, vx, vy, angle = world_to_image(10.0, 60.0, 5.0, 7.0, 0.3, height=64)
    assert (x, y, vx, vy, angle) == (9.5, 3.5, 5.0, -7.0, -0.3)  # high in the world = small image y
    assert world_to_image(0.0, 64.0, 0, 0, 0, height=64)[:2] == (-0.5, -0.5)  # top-left corner of the image


def test_free_fall_tracks_follow_gravity(config):
    """Before its first contact a dropped object's image y is a parabola with +g (downwards) acceleration."""
    meta = generate_clip(config, 3, "fall").meta
    fps = meta["fps"]
    for track in meta["tracks"]:
        first = min(
            (c["time"] for c in meta["contacts"] if track["id"] in c["objects"]), default=meta["duration"]
        )
        frames = int(first * fps)
        t = np.arange(frames) / fps
        accel = 2 * np.polyfit(t, track["y"][:frames], 2)[0]
        assert accel == pytest.approx(meta["gravity_px_s2"], rel=1e-3)


def test_resting_objects_make_no_contact_stream(config):
    """A soft ball dropped on the floor bounces a few times, settles, and then stays silent."""
    rng = np.random.default_rng(0)
    one_ball = WorldConfig(families=("fall",), max_objects=1, shapes=("circle",), materials=("rubber",))
    bodies = build_scene(one_ball, "fall", rng)
    bodies[0].elasticity = 0.5
    long_config = WorldConfig(families=("fall",), duration=6.0, max_objects=1)
    states, contacts = simulate(long_config, bodies)
    assert 2 <= len(contacts) <= 8
    assert contacts[-1]["time"] < 3.0  # nothing after it has come to rest
    times = [c["time"] for c in contacts]
    assert all(b - a >= long_config.contact_debounce for a, b in zip(times, times[1:]))


def test_contacts_are_real_impacts(config):
    """Every contact is above the speed threshold; object-object contacts happen where the bodies touch."""
    for seed in range(10):
        meta = default_clip(seed, "collide").meta
        tracks = {t["id"]: t for t in meta["tracks"]}
        radius = {o["id"]: o["radius_px"] for o in meta["objects"]}
        for contact in meta["contacts"]:
            assert contact["speed"] >= config.min_impact_speed * config.px_per_m - 1e-6
            if contact["with"] == "object":
                a, b = contact["objects"]
                f = contact["frame"]
                gap = math.dist(
                    (tracks[a]["x"][f], tracks[a]["y"][f]), (tracks[b]["x"][f], tracks[b]["y"][f])
                )
                assert gap <= radius[a] + radius[b] + 3.0  # within a frame's motion of touching


def test_relations_and_start_follow_image_axes(config):
    for seed in range(20):
        meta = default_clip(seed).meta
        x0 = {t["id"]: t["x"][0] for t in meta["tracks"]}
        y0 = {t["id"]: t["y"][0] for t in meta["tracks"]}
        for fact in meta["relations"]:
            a, b = fact["subject"], fact["object"]
            expected = {
                "left of": x0[a] < x0[b],
                "right of": x0[a] > x0[b],
                "above": y0[a] < y0[b],
                "below": y0[a] > y0[b],
            }[fact["relation"]]
            assert expected, (seed, fact)
        for start in meta["start"]:
            fx = (x0[start["id"]] + 0.5) / meta["width"]
            assert start["horizontal"] == ("left" if fx < 1 / 3 else "right" if fx > 2 / 3 else "centre")


def test_objects_stay_inside_the_walls(config):
    """Bounding boxes (rotation included) stay within the walls, ceiling and floor, up to solver slop."""
    for seed in range(10):
        for family in FAMILIES:
            meta = default_clip(seed, family).meta
            for track in meta["tracks"]:
                bbox = np.asarray(track["bbox"])  # (T, 4) x0, y0, x1, y1
                assert bbox[:, 0].min() >= -0.5 - 0.5 and bbox[:, 2].max() <= meta["width"] - 0.5 + 0.5
                assert bbox[:, 1].min() >= -0.5 - 0.5 and bbox[:, 3].max() <= meta["scene"]["floor_y"] + 0.5


def test_throw_with_large_bodies_never_fails_to_place():
    # The quickstart's slice uses sizes up to 0.26 m: a rotated large box is wider than a third of a 64 px
    # frame, where the throw recipe's start range used to be empty (ValueError: high - low < 0, the clip
    # dropped). It now starts at the centre of its third, still on the side the caption names.
    config = WorldConfig(
        families=("throw",), max_objects=1, sizes={"small": 0.16, "medium": 0.21, "large": 0.26}
    )
    sides = set()
    for seed in range(60):
        clip = generate_clip(config, seed)
        start = clip.meta["start"][0]["horizontal"]
        assert start in ("left", "right"), (seed, start)
        sides.add(start)
    assert sides == {"left", "right"}
