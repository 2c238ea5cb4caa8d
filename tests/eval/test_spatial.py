"""eval.spatial: prompt parsing, the T2V-CompBench rule, and left/right adherence on true vs mirrored
clips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eval import MissingInput
from eval.broken import blank, mirrored, objects_removed, recoloured
from eval.clip import EvalClip
from eval.spatial import (
    Detection,
    ObjectRef,
    Relation,
    frame_score,
    object_shapes,
    parse_relations,
    relation_holds,
    spatial_adherence,
)

RED, BLUE = ObjectRef("red", "circle"), ObjectRef("blue", "box")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("A red ball is to the left of a blue box.", [Relation(RED, "left of", BLUE)]),
        ("The red ball sits right of the blue square", [Relation(RED, "right of", BLUE)]),
        ("At first, the red disc is left of the blue block.", [Relation(RED, "left of", BLUE, initial=True)]),
        (
            "The red ball starts to the right of the blue box.",
            [Relation(RED, "right of", BLUE, initial=True)],
        ),
        ("A red ball above a blue box", [Relation(RED, "above", BLUE)]),
        ("The red ball is on the left side of the frame.", [Relation(RED, "left of", None)]),
        ("On the right, a red ball falls.", [Relation(RED, "right of", None, initial=True)]),
        (
            "A red ball at the top left falls.",
            [Relation(RED, "left of", None, True), Relation(RED, "above", None, True)],
        ),
        ("The red ball rolls to the left and bounces off the left wall.", []),
        ("A red ball falls. The blue box is to the left of it.", []),
        # "right" meaning correct is no place
        ("The red ball hits the floor at the right moment.", []),
        ("The red ball lands in the right spot at the right time.", []),
        # an object the prompt moves: its relations are about the start
        (
            "A red ball is to the left of a blue box. The red ball falls.",
            [Relation(RED, "left of", BLUE, initial=True)],
        ),
        # a resting object's start position is a state of the whole clip
        (
            "At the bottom right, a blue box rests on the floor.",
            [Relation(BLUE, "right of", None, False), Relation(BLUE, "below", None, False)],
        ),
    ],
)
def test_parse_relations(prompt, expected):
    assert parse_relations(prompt) == expected


def test_object_shapes_come_from_the_prompt():
    assert object_shapes("A small red rubber ball and a big blue box; a green thing") == {
        "red": "circle",
        "blue": "box",
    }


def test_rule_needs_the_right_and_dominant_direction():
    assert relation_holds("left of", (10, 30), (40, 32))
    assert not relation_holds("left of", (40, 30), (10, 32))  # wrong side
    # Far above and a little to the left: "above", not "left of" (a side-only check would say "left of").
    assert not relation_holds("left of", (20, 5), (26, 50)) and relation_holds("above", (20, 5), (26, 50))
    assert relation_holds("below", (26, 50), (20, 5)) and relation_holds("right of", (40, 30), (10, 32))


def test_frame_score_follows_t2v_compbench():
    rel = Relation(RED, "left of", BLUE)
    a, b = Detection((0, 0, 10, 10)), Detection((5, 0, 15, 10))  # IoU = 50 / 150
    assert frame_score(rel, [a], [b], (64, 64)) == (pytest.approx(0.4 + 0.6 * (1 - 1 / 3)), True)
    assert frame_score(rel, [b], [a], (64, 64)) == (0.4, False)  # found, wrong
    assert frame_score(rel, [a], [], (64, 64)) == (0.2, False)  # one missing
    assert frame_score(rel, [], [], (64, 64)) == (0.0, False)


class _FixedDetector:
    """A stand-in for an open-vocabulary detector: fixed boxes per colour."""

    def __init__(self, boxes: dict[str, tuple]):
        self.boxes = boxes

    def detect(self, frames, ref):
        return [[Detection(self.boxes[ref.color], 0.9)] if ref.color in self.boxes else [] for _ in frames]


def test_detector_is_pluggable():
    clip_video = np.zeros((20, 64, 64, 3), np.uint8)
    from eval.clip import EvalClip

    clip = EvalClip(clip_video, 24.0, prompt="A red ball is to the left of a blue box.")
    left = spatial_adherence(clip, _FixedDetector({"red": (0, 20, 10, 30), "blue": (40, 20, 50, 30)}))
    assert left == {
        "spatial_score": 1.0,
        "spatial_correct": 1.0,
        "spatial_pass": 1.0,
        "spatial_relations": 1.0,
        "left_right_accuracy": 1.0,
        "left_right_correct": 1.0,
        "left_right_relations": 1.0,
    }
    right = spatial_adherence(clip, _FixedDetector({"red": (40, 20, 50, 30), "blue": (0, 20, 10, 30)}))
    assert right["spatial_score"] == pytest.approx(0.4) and right["spatial_pass"] == 0.0
    assert right["left_right_accuracy"] == 0.0 and "vertical_accuracy" not in right
    with pytest.raises(MissingInput):
        spatial_adherence(dataclasses.replace(clip, prompt="A red ball falls."))


class _FrameDetector:
    """Boxes chosen per frame from the frame's first pixel: 1 -> red left of blue, 0 -> mirrored."""

    def detect(self, frames, ref):
        boxes = {1: {"red": (0, 20, 10, 30), "blue": (40, 20, 50, 30)}, 0: {"red": (40, 20, 50, 30)}}
        boxes[0]["blue"] = (0, 20, 10, 30)
        return [[Detection(boxes[int(f[0, 0, 0])][ref.color])] for f in frames]


def _marked_clip(correct: list[bool], prompt: str, given_frames: int = 0) -> EvalClip:
    video = np.zeros((len(correct), 8, 8, 3), np.uint8)
    video[np.asarray(correct), 0, 0, 0] = 1
    return EvalClip(video, 24.0, prompt=prompt, given_frames=given_frames)


def test_half_credit_fails_the_strict_pass():
    # one of two horizontal relations right on every frame: 0.5 correct, which must not pass
    clip = _marked_clip(
        [True] * 16, "The red ball is left of the blue box. The blue box is left of the red ball."
    )
    result = spatial_adherence(clip, _FrameDetector())
    assert result["left_right_correct"] == 0.5 and result["left_right_accuracy"] == 0.0
    assert result["spatial_pass"] == 0.0


def test_states_are_judged_on_every_frame_and_start_relations_on_the_first():
    late = [True] + [False] * 15  # right at the start only
    state = spatial_adherence(_marked_clip(late, "The red ball is left of the blue box."), _FrameDetector())
    assert state["left_right_correct"] == pytest.approx(1 / 16) and state["left_right_accuracy"] == 0.0
    start = _marked_clip(late, "At first, the red ball is left of the blue box.")
    assert spatial_adherence(start, _FrameDetector())["left_right_accuracy"] == 1.0


def test_conditioned_clips_are_judged_on_generated_frames_only():
    given = [True] * 12 + [False] * 8  # the 12 given frames are right, the 8 generated ones wrong
    prompt = "The red ball is left of the blue box."
    assert spatial_adherence(_marked_clip(given, prompt), _FrameDetector())["left_right_accuracy"] == 1.0
    conditioned = spatial_adherence(_marked_clip(given, prompt, given_frames=12), _FrameDetector())
    assert conditioned["left_right_correct"] == 0.0 and conditioned["left_right_accuracy"] == 0.0
    with pytest.raises(MissingInput, match="given first frame"):  # a start relation is the given frame's
        spatial_adherence(_marked_clip(given, "At first, " + prompt, given_frames=1), _FrameDetector())


def test_a_missing_object_fails_the_relation():
    clip = _marked_clip([True] * 16, "The red ball is left of the blue box.")
    result = spatial_adherence(clip, _FixedDetector({"red": (0, 20, 10, 30)}))
    assert result["left_right_correct"] == 0.0 and result["left_right_accuracy"] == 0.0


def _relation_prompts(clip) -> list[str]:
    """One explicit prompt per left/right ground-truth relation at frame 0 that also passes the dominance
    rule."""
    objects = {o["id"]: o for o in clip.meta["objects"]}
    tracks = {t["id"]: t for t in clip.meta["tracks"]}
    prompts = []
    for rel in clip.meta["relations"]:
        a, b = tracks[rel["subject"]], tracks[rel["object"]]
        if rel["relation"] in ("left of", "right of") and relation_holds(
            rel["relation"], (a["x"][0], a["y"][0]), (b["x"][0], b["y"][0])
        ):
            prompts.append(
                f"At first, the {objects[rel['subject']]['color']} {objects[rel['subject']]['shape']} "
                f"is {rel['relation']} the {objects[rel['object']]['color']} object."
            )
    return prompts


def test_true_relations_pass_and_mirrored_ones_fail(world, world_mp4):
    cases = [(k, p) for k in world for p in _relation_prompts(world[k])]
    assert len(cases) >= 8
    for key, prompt in cases:
        assert spatial_adherence(dataclasses.replace(world_mp4[key], prompt=prompt))["spatial_score"] > 0.9, (
            prompt
        )
        flipped = spatial_adherence(dataclasses.replace(mirrored(world[key]), prompt=prompt))
        assert flipped["spatial_score"] == pytest.approx(0.4) and flipped["spatial_pass"] == 0.0, prompt


def test_generated_captions_score_high_on_truth_and_low_when_mirrored(world, world_mp4):
    usable = [
        k
        for k in world
        if any(r.relation in ("left of", "right of") for r in parse_relations(world[k].prompt))
    ]
    assert len(usable) >= 5
    truth = [spatial_adherence(world_mp4[k]) for k in usable]
    flipped = [spatial_adherence(mirrored(world[k])) for k in usable]
    assert all(r["left_right_accuracy"] == 1.0 for r in truth)
    assert np.mean([r["left_right_correct"] for r in truth]) >= 0.95
    assert all(r["left_right_accuracy"] == 0.0 for r in flipped)
    assert np.mean([r["left_right_correct"] for r in flipped]) <= 0.1
    # vertical relations are reported apart: mirroring keeps them, so they must not dilute left/right
    vertical = [(t, f) for t, f in zip(truth, flipped, strict=True) if "vertical_accuracy" in t]
    assert len(vertical) >= 3
    assert all(t["vertical_accuracy"] == f["vertical_accuracy"] == 1.0 for t, f in vertical)
    assert np.mean([r["spatial_score"] for r in flipped]) < np.mean([r["spatial_score"] for r in truth]) - 0.3


def test_blank_and_objects_removed_fail_left_right(world):
    for key in ("fall_0", "throw_1", "static_0"):
        assert spatial_adherence(blank(world[key]))["left_right_accuracy"] == 0.0, key
        assert spatial_adherence(objects_removed(world[key]))["left_right_correct"] == 0.0, key


def test_missing_object_lowers_the_score(world):
    clip = world["throw_1"]
    prompt = _relation_prompts(clip)[0].replace("At first, ", "")  # judged on all 16 frames
    gone = spatial_adherence(dataclasses.replace(recoloured(clip, start=0), prompt=prompt))
    assert gone["spatial_correct"] < 1.0 and gone["spatial_score"] <= 0.7
