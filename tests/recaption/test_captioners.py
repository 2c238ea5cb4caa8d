"""recaption.captioners (ground truth, pass-through), recaption.apply (checks, retries, json), registry."""

import numpy as np
import pytest

from data_pipelines.synthetic import WorldConfig, generate_clip
from recaption import registry
from recaption.apply import caption_clips, check_caption, recaptioned_meta
from recaption.base import Caption, Captioner, CaptionError, CaptionInput
from recaption.captioners import GroundTruthCaptioner, PassthroughCaptioner
from recaption.registry import build_captioner

FRAMES = np.zeros((2, 8, 8, 3), np.uint8)


@pytest.fixture(scope="module")
def world_clip():
    return generate_clip(WorldConfig(width=32, height=32, duration=0.5, fps=8.0), seed=3, family="throw")


def _input(meta=None, caption="", key="k"):
    return CaptionInput(frames=FRAMES, meta=meta or {}, caption=caption, key=key)


@pytest.mark.parametrize("form", ["dense", "short", "structured"])
def test_ground_truth_writes_the_chosen_form_and_returns_all_three(world_clip, form):
    caption = GroundTruthCaptioner(form=form).caption(_input(world_clip.meta, world_clip.caption))
    assert caption.text == world_clip.meta["captions"][form]
    assert caption.forms == world_clip.meta["captions"]
    assert caption.forms["dense"] == world_clip.caption


def test_ground_truth_without_ground_truth_is_a_caption_error(world_clip):
    with pytest.raises(CaptionError, match="no synthetic-world ground truth .*'tracks'"):
        GroundTruthCaptioner().caption(_input({k: v for k, v in world_clip.meta.items() if k != "tracks"}))
    with pytest.raises(CaptionError, match="unreadable ground truth"):
        GroundTruthCaptioner().caption(_input({**world_clip.meta, "start": [{"id": 99}]}))
    with pytest.raises(ValueError, match="form must be one of"):
        GroundTruthCaptioner(form="long")
    assert GroundTruthCaptioner(form="short").describe() == {
        "name": "ground_truth",
        "version": "1",
        "form": "short",
    }


def test_passthrough_keeps_the_caption_and_refuses_an_empty_one():
    assert PassthroughCaptioner().caption(_input(caption="a red bar")).text == "a red bar"
    with pytest.raises(CaptionError, match="has no caption to pass through"):
        PassthroughCaptioner().caption(_input(caption="  ", key="blank"))


class _Script(Captioner):
    """Answers per key: a string, an exception to raise or a raw object; ``batch_fails`` fails batches."""

    name = "script"

    def __init__(self, answers: dict, batch_fails: bool = False) -> None:
        self.answers, self.batch_fails, self.calls = answers, batch_fails, []

    def caption_batch(self, clips):
        self.calls.append([c.key for c in clips])
        if self.batch_fails and len(clips) > 1:
            raise RuntimeError("the batch failed")
        out = []
        for clip in clips:
            answer = self.answers[clip.key]
            if isinstance(answer, Exception):
                raise answer
            out.append(answer if not isinstance(answer, str) else Caption(answer))
        return out


def test_caption_clips_retries_a_failed_batch_clip_by_clip_and_names_each_reason():
    answers = {
        "ok": "a ball",
        "boom": RuntimeError("cuda oom"),
        "cant": CaptionError("no objects"),
        "empty": " ",
        "surrogate": "a \udcff ball",
        "replaced": "a \ufffd ball",
        "bytes": Caption(b"a ball"),
        "bad_form": Caption("a ball", forms={"short": ""}),
        "ok2": Caption("a box", forms={"short": "box"}),
    }
    captioner = _Script(answers)
    outcomes = caption_clips(captioner, [_input(key=k) for k in answers])
    got = {k: (o.caption.text if o.caption else o.reason) for k, o in zip(answers, outcomes)}
    assert got == {
        "ok": "a ball",
        "boom": "exception",
        "cant": "caption_error",
        "empty": "empty",
        "surrogate": "not_utf8",
        "replaced": "not_utf8",
        "bytes": "bad_output",
        "bad_form": "empty",
        "ok2": "a box",
    }
    assert "RuntimeError: cuda oom" in outcomes[1].message
    assert captioner.calls[0] == list(answers) and len(captioner.calls) == 1 + len(
        answers
    )  # batch, then one by one
    # a batch that fails as a whole (not one clip's fault) still captions every clip one by one
    whole = _Script({"a": "x", "b": "y"}, batch_fails=True)
    assert [o.caption.text for o in caption_clips(whole, [_input(key="a"), _input(key="b")])] == ["x", "y"]


def test_caption_clips_flags_a_wrong_number_of_captions():
    class Dropping(Captioner):
        def caption_batch(self, clips):
            return [Caption("one")] * (len(clips) - 1)

    outcomes = caption_clips(Dropping(), [_input(key="a"), _input(key="b")])
    assert [o.reason for o in outcomes] == ["bad_output", "bad_output"]
    assert check_caption("text").reason == "bad_output"


def test_recaptioned_meta_keeps_the_first_original_and_the_old_forms():
    gt = GroundTruthCaptioner(form="short")
    meta = {"seed": 1, "captions": {"dense": "D", "short": "S"}}
    once = recaptioned_meta(meta, "D", gt, Caption("S", {"dense": "D", "short": "S"}))
    assert once["caption_original"] == "D" and once["captioner"]["form"] == "short"
    assert once["captions"] == {"dense": "D", "short": "S"} and "captions_original" not in once
    twice = recaptioned_meta(once, "S", PassthroughCaptioner(), Caption("new"))
    assert twice["caption_original"] == "D"  # what came before ANY recaptioning
    assert twice["captions"] == {"passthrough": "new"}
    assert twice["captions_original"] == {"dense": "D", "short": "S"}
    assert meta == {"seed": 1, "captions": {"dense": "D", "short": "S"}}  # the input is not modified


def test_registry_builds_by_name_and_explains_bad_names_options_and_model_folders(tmp_path, monkeypatch):
    assert isinstance(build_captioner("ground_truth", form="short"), GroundTruthCaptioner)
    assert build_captioner("ground_truth", form="short").form == "short"
    assert isinstance(build_captioner("passthrough"), PassthroughCaptioner)
    with pytest.raises(
        ValueError, match=r"unknown name 'blip'; choose from \['ground_truth', 'hf', 'passthrough', 'pixel'\]"
    ):
        build_captioner("blip")
    with pytest.raises(ValueError, match="captioner passthrough: bad options"):
        build_captioner("passthrough", form="short")
    with pytest.raises(ValueError, match="captioner hf: give the model folder"):
        build_captioner("hf")
    with pytest.raises(ValueError, match="model_path '.*nope' is not a folder"):
        build_captioner("hf", model_path=str(tmp_path / "nope"))
    monkeypatch.setitem(registry.CAPTIONERS, "pixel", ("recaption.not_there", "PixelCaptioner"))
    with pytest.raises(ValueError, match="captioner pixel: cannot import recaption.not_there"):
        build_captioner("pixel")
