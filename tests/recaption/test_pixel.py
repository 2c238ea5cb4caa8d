"""The pixel captioner on a few 64x64 world clips with known truth, after the mp4 round trip of shards.

Each clip's truth is asserted first, so a change of the world that moves these seeds fails here loudly
instead of quietly testing something else.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines.synthetic import WorldConfig, generate_clip
from data_pipelines.synthetic.palette import BACKGROUNDS, FLOOR_RGB
from recaption.base import CaptionError, CaptionInput
from recaption.pixel import PixelCaptioner
from sora.media import encode_mp4, read_media


def _decoded(config: WorldConfig, seed: int):
    """(clip with truth, CaptionInput of its decoded mp4 with no metadata)."""
    clip = generate_clip(config, seed)
    media = read_media(encode_mp4(clip.video, clip.meta["fps"], clip.audio, clip.meta["sample_rate"]))
    item = CaptionInput(
        frames=media.video, audio=media.audio, fps=media.fps, sample_rate=media.sample_rate, key=clip.key
    )
    return clip, item


@pytest.fixture(scope="module")
def red_ball():
    """A large red ball dropped on the left that bounces three times (seed 32 of a one-ball fall world)."""
    clip, item = _decoded(WorldConfig(families=("fall",), max_objects=1, shapes=("circle",)), 32)
    obj, start = clip.meta["objects"][0], clip.meta["start"][0]
    assert (obj["color"], obj["shape"], obj["size"], obj["role"]) == ("red", "circle", "large", "dropped")
    assert start["horizontal"] == "left"
    assert [c["with"] for c in clip.meta["contacts"]] == ["floor"] * 3
    return clip, item


@pytest.fixture(scope="module")
def thrown_box():
    """A large cyan box thrown from the right to the left (seed 0 of a one-box throw world)."""
    clip, item = _decoded(WorldConfig(families=("throw",), max_objects=1, shapes=("box",)), 0)
    obj = clip.meta["objects"][0]
    assert (obj["color"], obj["shape"], obj["size"], obj["role"]) == ("cyan", "box", "large", "thrown")
    assert clip.meta["start"][0]["horizontal"] == "right" and clip.meta["tracks"][0]["vx"][0] < 0
    return clip, item


def test_red_ball_on_the_left_falls(red_ball):
    _, item = red_ball
    caption = PixelCaptioner().caption(item)
    assert caption.forms["short"] == "a red ball on the left falls"
    assert caption.forms["structured"].startswith(
        "objects: red ball (left, falls, bounces 3); sounds: 3 impacts"
    )
    assert caption.text == caption.forms["dense"]
    dense = caption.text.lower()
    assert "red" in dense and any(noun in dense for noun in ("ball", "disc", "circle"))
    assert "left" in dense and "right" not in dense
    assert any(verb in dense for verb in ("falls", "drops", "is dropped"))
    assert any(size in dense for size in ("large", "big")) or "red ball" in caption.forms["short"]


def test_tiny_box_and_tiny_ball_are_told_apart():
    """The world's small objects (3 px) are too small for the colour mask's shape; the luma harmonic tells."""
    captioner = PixelCaptioner()
    for shape, noun in (("circle", "ball"), ("box", "box")):
        clip, item = _decoded(WorldConfig(families=("static",), max_objects=1, shapes=(shape,)), 3)
        obj = clip.meta["objects"][0]
        assert (obj["color"], obj["shape"], obj["size"]) == ("cyan", shape, "small")
        assert captioner.caption(item).forms["structured"].startswith(f"objects: cyan {noun} (right, rests)")


def test_mirrored_clip_flips_left_and_right(red_ball, thrown_box):
    captioner = PixelCaptioner()
    for (_, item), before, after in (
        (red_ball, "red ball (left, falls", "red ball (right, falls"),
        (thrown_box, "cyan box (right, thrown left", "cyan box (left, thrown right"),
    ):
        mirrored = CaptionInput(
            frames=np.ascontiguousarray(item.frames[:, :, ::-1]),
            audio=item.audio,
            fps=item.fps,
            sample_rate=item.sample_rate,
            key=item.key,
        )
        assert before in captioner.caption(item).forms["structured"]
        assert after in captioner.caption(mirrored).forms["structured"]


def test_silenced_clip_says_no_impact_sound(red_ball):
    _, item = red_ball
    silenced = CaptionInput(
        frames=item.frames, audio=np.zeros_like(item.audio), fps=item.fps, sample_rate=item.sample_rate
    )
    caption = PixelCaptioner().caption(silenced)
    assert caption.forms["structured"].endswith("; sounds: none")
    assert "bounces 3" in caption.forms["structured"]  # still seen, no longer heard
    assert "silent" in caption.text or "Nothing makes a sound" in caption.text
    for word in ("thump", "thud", "bump", "clang", "click", "knock", "clink", "impact"):
        assert word not in caption.text


def test_captioner_never_reads_the_metadata(red_ball, thrown_box):
    """Handing it another clip's ground truth changes nothing."""
    (_, item), (other, _) = red_ball, thrown_box
    lied_to = CaptionInput(
        frames=item.frames,
        audio=item.audio,
        fps=item.fps,
        sample_rate=item.sample_rate,
        meta=other.meta,
        caption=other.caption,
        key=item.key,
    )
    assert PixelCaptioner().caption(lied_to) == PixelCaptioner().caption(item)


def test_blank_clip_raises_caption_error():
    frames = np.empty((12, 64, 64, 3), np.uint8)
    frames[:] = BACKGROUNDS["navy"]
    frames[:, 60:] = FLOOR_RGB
    with pytest.raises(CaptionError, match="no object of the world's palette is seen"):
        PixelCaptioner().caption(CaptionInput(frames=frames, key="blank"))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="sizes must have exactly the keys"):
        PixelCaptioner(sizes={"small": 0.1})
