"""eval.objects: every prompted object is found in ground truth, in its colour and shape; removed, blanked,
vanished or reshaped objects are not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eval import MissingInput
from eval.broken import _rerender, blank, objects_removed, vanished
from eval.objects import classify_shape, object_presence
from eval.tracking import track_clip


def test_ground_truth_objects_are_all_found_in_colour_and_shape(world_mp4):
    for key, clip in world_mp4.items():
        for c in (clip, dataclasses.replace(clip, meta=None)):  # from the metadata or from the prompt
            result = object_presence(c)
            assert result["detection_rate"] == 1.0 and result["colour_accuracy"] == 1.0, key
    checked = sum(object_presence(c)["shape_checked"] for c in world_mp4.values())
    assert checked >= 12


def test_removed_or_blank_objects_score_zero(world):
    for key, clip in world.items():
        for breaker in (objects_removed, blank):
            result = object_presence(breaker(clip))
            assert result["detection_rate"] == 0.0 and result["colour_accuracy"] == 0.0, (
                key,
                breaker.__name__,
            )


def test_detection_rate_counts_frames_and_objects(world):
    clip = world["fall_0"]  # two objects, 48 frames; the most moving one gone from frame 24 on
    result = object_presence(vanished(clip, start=24))
    assert result["detection_rate"] == pytest.approx(0.75)
    assert result["colour_accuracy"] == 0.5  # seen in exactly half the frames: not "found"
    # a conditioned clip is judged on its generated frames: here those where the object is gone
    later = object_presence(dataclasses.replace(vanished(clip, start=24), given_frames=24))
    assert later["detection_rate"] == pytest.approx(0.5) and later["colour_accuracy"] == 0.5


def _swap_shapes(clip):
    def edit(meta: dict) -> None:
        for obj in meta["objects"]:
            obj["shape"] = "box" if obj["shape"] == "circle" else "circle"

    return dataclasses.replace(clip, video=_rerender(clip, edit))


def test_a_wrong_shape_fails_where_the_object_is_large_enough(world, world_mp4):
    swapped = {k: object_presence(_swap_shapes(world[k])) for k in world}
    truth = {k: object_presence(world_mp4[k]) for k in world}
    judged = [k for k in world if truth[k]["shape_checked"] > 0 and swapped[k]["shape_checked"] > 0]
    assert len(judged) >= 5
    for key in judged:
        assert swapped[key]["colour_accuracy"] < truth[key]["colour_accuracy"], key
        assert swapped[key]["detection_rate"] == 1.0, key  # the objects are there, in the wrong shape
    assert np.mean([swapped[k]["colour_accuracy"] for k in judged]) <= 0.5


def test_shape_classifier_on_ground_truth(world_mp4):
    for key, clip in world_mp4.items():
        for tr in track_clip(clip).values():
            obj = clip.meta["objects"][int(tr.key)]
            shape = classify_shape(tr, clip.generated)
            assert shape in (None, obj["shape"]), (key, obj)
            if obj["size"] == "large":  # large objects are always judged
                assert shape == obj["shape"], (key, obj)


def test_a_prompt_without_objects_and_no_metadata_is_missing_input(world):
    bare = dataclasses.replace(world["fall_0"], meta=None, prompt="Something happens.")
    with pytest.raises(MissingInput, match="names no palette colour"):
        object_presence(bare)
    # named but absent: a prompted colour that is never drawn is a failure, not a skip
    extra = dataclasses.replace(world["fall_0"], meta=None, prompt=world["fall_0"].prompt + " A cyan box.")
    result = object_presence(extra)
    assert result["colour_accuracy"] == pytest.approx(2 / 3) and result["detection_rate"] == pytest.approx(
        2 / 3
    )
