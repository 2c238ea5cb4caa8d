"""data_pipelines.mirror: a clip's left/right mirror image, its captions and metadata told the same way."""

import numpy as np
import pytest

from data_pipelines.mirror import mirror_meta, swap_sides
from data_pipelines.synthetic import WorldConfig, describe, generate_clip, render_frames
from data_pipelines.synthetic.captions import caption_forms


def test_swap_sides_swaps_whole_words_and_keeps_case():
    assert swap_sides("On the left, a red ball rolls to the right.") == (
        "On the right, a red ball rolls to the left."
    )
    assert swap_sides("Left: it moves rightwards, then LEFTWARDS; the leftmost box") == (
        "Right: it moves leftwards, then RIGHTWARDS; the rightmost box"
    )
    assert swap_sides("leftover brightness, a copyright") == "leftover brightness, a copyright"  # not words
    assert swap_sides(swap_sides("the top left and the lower right")) == "the top left and the lower right"


@pytest.mark.parametrize("family", ["fall", "slide", "throw", "collide"])
def test_mirrored_metadata_renders_the_flipped_clip_and_captions_it_with_sides_swapped(family):
    """The world renders and captions from its metadata, so the mirrored metadata must give the flipped
    frames and, with the same wording draws, the caption with left and right swapped."""
    config = WorldConfig(max_objects=2)
    clip = generate_clip(config, seed=3, family=family)
    meta = clip.meta
    mirrored = mirror_meta(meta)
    assert mirrored["mirrored"] is True and meta.get("mirrored") is None  # the source is left untouched
    frames = render_frames(mirrored)
    flipped = clip.video[:, :, ::-1]
    assert np.abs(frames.astype(int) - flipped.astype(int)).max() <= 2  # anti-aliasing rounding only
    assert mirrored["caption"] == swap_sides(meta["caption"])
    assert mirrored["captions"] == {k: swap_sides(v) for k, v in meta["captions"].items()}
    seed_rng = lambda: np.random.default_rng(np.random.SeedSequence(3).spawn(5)[4])  # noqa: E731
    caption, facts = describe(mirrored, seed_rng())
    assert describe(meta, seed_rng())[0] == meta["caption"]  # the wording draws are the clip's own
    assert caption == swap_sides(meta["caption"]) and facts == mirrored["caption_facts"]
    forms = caption_forms({**mirrored, "caption": caption, "caption_facts": facts})
    assert forms == mirrored["captions"]
    for track in mirrored["tracks"]:  # each box still holds its object: left edge <= x <= right edge
        assert all(b[0] <= x <= b[2] for b, x in zip(track["bbox"], track["x"], strict=True))
    assert mirrored["scene"] == meta["scene"]  # the world's walls are symmetric: the mirror has the same
    twice = mirror_meta(mirrored)
    assert twice["mirrored"] is False
    assert {k: v for k, v in twice.items() if k != "mirrored"} == meta


def test_mirror_without_geometry_swaps_the_captions_only():
    meta = {"caption": "a box on the left", "caption_txt": "A box at the bottom left.", "objects": [{}]}
    out = mirror_meta(meta)
    assert out == {
        "caption": "a box on the right",
        "caption_txt": "A box at the bottom right.",
        "objects": [{}],
        "mirrored": True,
    }
