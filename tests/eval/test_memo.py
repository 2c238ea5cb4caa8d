"""eval.memo and the work it saves: the colour labels and tracks and the optical flow that several metrics
share are computed once per clip, give what the plain computation gives, and cannot be written into."""

from __future__ import annotations

import numpy as np
import pytest

from eval import temporal, tracking
from eval.memo import Memo, content_key
from eval.tracking import COLOR_TOLERANCE, default_palette, label_colors, track_colors


def _plain_labels(video, palette, tolerance):
    """The rule label_colors implements, written the slow obvious way."""
    colors = np.asarray(list(palette.values()), dtype=np.float64)
    d = np.linalg.norm(video.astype(np.float64)[..., None, :] - colors, axis=-1)  # (T, H, W, K)
    nearest = d.argmin(axis=-1)
    return np.where(d.min(axis=-1) <= tolerance, nearest, -1)


def test_labels_are_the_nearest_palette_colour_within_tolerance():
    palette = default_palette()
    rgb = np.asarray(list(palette.values()))
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    # pixels near the palette, and at exactly the tolerance from a colour on either side of it
    near = rgb[rng.integers(0, len(rgb), (3, 12, 12))] + rng.integers(-70, 71, (3, 12, 12, 3))
    video[:, :12, :12] = np.clip(near, 0, 255)
    edge = np.clip(rgb[:, None] + np.array([[48, 64, 0], [0, -48, -64], [48, 64, 1]]), 0, 255)  # 80, 80, >80
    video[0, 20, : edge.size // 3] = edge.reshape(-1, 3)[:24]
    for tolerance in (COLOR_TOLERANCE, 40.0, 100.0):
        labels = label_colors(video, palette, tolerance)
        assert labels.dtype == np.int8 and labels.shape == video.shape[:3]
        np.testing.assert_array_equal(labels, _plain_labels(video, palette, tolerance))
    assert (label_colors(video, palette) >= 0).mean() > 0.1  # the check saw labelled pixels, not only -1


def test_memo_keys_by_content_and_keeps_the_last_results():
    memo, calls = Memo(maxsize=2), []

    def make(v):
        calls.append(v)
        return v * 10

    a = np.arange(6, dtype=np.uint8)
    assert memo.get(content_key(a), lambda: make(1)) == 10
    assert memo.get(content_key(a.copy()), lambda: make(2)) == 10  # a copy hits
    assert memo.get(content_key(a.reshape(2, 3)), lambda: make(3)) == 30  # the shape is part of the key
    assert memo.get(content_key(a.astype(np.int16)), lambda: make(4)) == 40  # and the dtype
    b = a.copy()
    b[0] = 9  # changed in place: a miss
    assert memo.get(content_key(b), lambda: make(5)) == 50
    assert memo.get(content_key(a), lambda: make(6)) == 60  # evicted: only the last 2 are kept
    assert calls == [1, 3, 4, 5, 6] and (memo.hits, memo.misses) == (1, 5)
    assert content_key(a, "x") != content_key(a, "y")
    with pytest.raises(ValueError, match="maxsize"):
        Memo(0)


def test_tracks_and_flows_are_computed_once_per_clip_and_read_only(world):
    clip = next(iter(world.values()))
    palette = default_palette()
    tracking._TRACKS.clear()
    first = track_colors(clip.video, palette)
    second = track_colors(clip.video.copy(), palette)
    assert (tracking._TRACKS.hits, tracking._TRACKS.misses) == (1, 1)
    assert first.keys() == second.keys() and first
    name = next(iter(first))
    assert first[name] is not second[name]  # callers set key / expected on their own objects
    first[name].expected = not first[name].expected
    assert second[name].expected != first[name].expected
    with pytest.raises(ValueError, match="read-only"):
        second[name].area[0] = 1.0
    fresh = tracking._track_colors(clip.video, palette, COLOR_TOLERANCE)  # not memoised
    np.testing.assert_array_equal(fresh[name].masks, second[name].masks)

    temporal._FLOWS.clear()
    f1 = temporal.farneback_flow(clip.video[0], clip.video[1])
    f2 = temporal.farneback_flow(clip.video[0].copy(), clip.video[1].copy())
    back = temporal.farneback_flow(clip.video[1], clip.video[0])  # the other direction is another flow
    assert f1 is f2 and back is not f1 and (temporal._FLOWS.hits, temporal._FLOWS.misses) == (1, 2)
    with pytest.raises(ValueError, match="read-only"):
        f1[0, 0, 0] = 1.0
