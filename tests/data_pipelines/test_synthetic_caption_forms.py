"""data_pipelines.synthetic caption forms: short and structured, stored beside the unchanged dense caption."""

import hashlib
import json

import pytest
import webdataset as wds

from data_pipelines.synthetic import WorldConfig, generate_clip, write_shards
from data_pipelines.synthetic.captions import caption_forms, scene_facts, short_caption, structured_caption

TINY = WorldConfig(width=32, height=32, duration=1.0, fps=12.0)

# sha256(caption + video bytes + audio bytes)[:16] and sha256(json without "captions")[:16] of clips made
# BEFORE the short and structured forms existed (main at 02cf4db): adding the forms changed none of them.
PINNED = {
    (0, "fall"): ("f5b7549b2fa4e878", "0f80fe528002bb1b"),
    (1, "throw"): ("2b5b43af7416383e", "998dcb4b8d6e1baa"),
    (2, "slide"): ("da62886485646e7b", "c5add935c216d1bf"),
    (3, "collide"): ("691ffc16fc415d0a", "f8db0aee989c9232"),
    (4, "static"): ("dafc3f964738abcd", "83bda8e7fd8033d7"),
    (5, None): ("e6e1a4739e0ccab8", "3d53d0ad1f15f08a"),
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize(("seed", "family"), list(PINNED))
def test_new_forms_leave_every_seed_dense_caption_pictures_sound_and_metadata_unchanged(seed, family):
    clip = generate_clip(TINY, seed, family)
    media_hash, meta_hash = PINNED[(seed, family)]
    assert _sha(clip.caption.encode() + clip.video.tobytes() + clip.audio.tobytes()) == media_hash
    assert _sha(json.dumps({k: v for k, v in clip.meta.items() if k != "captions"}).encode()) == meta_hash
    assert clip.meta["captions"]["dense"] == clip.caption
    assert set(clip.meta["captions"]) == {"dense", "short", "structured"}


def _obj(i, color, shape="circle", size="small", role="dropped", x0=5.0, x1=5.0, vx=0.0, side="left"):
    return (
        {"id": i, "color": color, "shape": shape, "size": size, "role": role, "radius_px": 4.0},
        {"id": i, "x": [x0, x1], "vx": [vx, vx], "vy": [0.0, 0.0]},
        {"id": i, "horizontal": side, "vertical": "top"},
    )


def _meta(*objs, contacts=()):
    return {
        "objects": [o[0] for o in objs],
        "tracks": [o[1] for o in objs],
        "start": [o[2] for o in objs],
        "contacts": list(contacts),
        "scene": {"px_per_m": 10.0},
        "caption": "dense",
    }


def test_short_caption_names_colour_shape_side_and_one_verb_per_motion():
    one = _meta(_obj(0, "red"))
    assert short_caption(scene_facts(one)) == "a red ball on the left falls"
    two = _meta(_obj(0, "red"), _obj(1, "blue", shape="box", side="right"))
    assert short_caption(scene_facts(two)) == "a red ball on the left and a blue box on the right fall"
    mixed = _meta(
        _obj(0, "orange", role="thrown", vx=30.0),
        _obj(1, "green", shape="box", role="resting", x0=20.0, x1=20.5, side="centre"),
        _obj(2, "cyan", role="resting", x0=25.0, x1=12.0, side="right"),
    )
    assert short_caption(scene_facts(mixed)) == (
        "an orange ball on the left is thrown to the right; a green box in the middle rests; "
        "a cyan ball on the right is knocked to the left"
    )


def test_structured_caption_lists_objects_and_every_sound_with_time_and_loudness():
    meta = _meta(
        _obj(0, "red", size="large"),
        _obj(1, "blue", shape="box", role="slid", vx=-20.0, side="right"),
        contacts=[  # speeds in px/s at 10 px/m: 30 -> 3 m/s loud, 5 -> 0.5 m/s soft, 15 -> neither
            {"time": 0.931, "objects": [0, 1], "with": "object", "speed": 5.0},
            {"time": 0.4149, "objects": [0], "with": "floor", "speed": 30.0},
            {"time": 1.2, "objects": [1], "with": "wall_left", "speed": 15.0},
            {"time": 1.5, "objects": [0], "with": "floor", "speed": 15.0},
        ],
    )
    assert structured_caption(scene_facts(meta)) == (
        "objects: large red ball (left, falls, bounces 2), small blue box (right, slides left); "
        "sounds: 4 impacts at 0.41 s (red ball on the floor, loud), 0.93 s (red ball and blue box, soft), "
        "1.20 s (blue box on the left wall), 1.50 s (red ball on the floor)"
    )
    assert structured_caption(scene_facts(_meta(_obj(0, "red", role="resting")))) == (
        "objects: small red ball (left, rests); sounds: none"
    )


def test_forms_of_generated_clips_agree_with_their_ground_truth():
    for seed, family in [(0, "fall"), (1, "throw"), (3, "collide")]:
        meta = generate_clip(TINY, seed, family).meta
        facts = scene_facts(meta)
        assert len(facts["sounds"]) == len(meta["contacts"])
        assert [s["time"] for s in facts["sounds"]] == sorted(s["time"] for s in facts["sounds"])
        for fact in facts["objects"]:
            floor = [c for c in meta["contacts"] if c["with"] == "floor" and fact["id"] in c["objects"]]
            assert fact["bounces"] == len(floor)
            assert (
                f"{fact['color']} {'ball' if fact['shape'] == 'circle' else 'box'}"
                in meta["captions"]["short"]
            )
        if family == "fall":
            assert {f["motion"] for f in facts["objects"]} == {"falls"}
        if family == "throw":
            thrown = next(f for f in facts["objects"] if f["motion"] == "thrown")
            vx = meta["tracks"][thrown["id"]]["vx"][0]
            assert thrown["direction"] == ("right" if vx > 0 else "left")
    with pytest.raises(ValueError, match="not a synthetic-world ground truth"):
        caption_forms({"objects": []})


def test_world_shards_carry_all_three_forms_in_their_json(tmp_path):
    write_shards(
        WorldConfig(width=32, height=32, duration=0.5, fps=8.0), tmp_path, 3, num_workers=1, progress=False
    )
    samples = list(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False))
    assert len(samples) == 3
    for sample in samples:
        captions = json.loads(sample["json"])["captions"]
        assert captions["dense"] == sample["txt"].decode()
        assert captions["short"] and captions["structured"].startswith("objects: ")
