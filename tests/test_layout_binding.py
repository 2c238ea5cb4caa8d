"""benchmarks/layout_binding.py: the layout score on models whose answer is known."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "layout_binding", Path(__file__).parents[1] / "benchmarks" / "layout_binding.py"
)
lb = sys.modules["layout_binding"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(lb)


class SideText:
    """Encodes a caption as one token: +1 when it says left, -1 when it says right."""

    def encode(self, captions):
        emb = torch.tensor([[[1.0 if "left" in c else -1.0]] for c in captions])
        return emb, torch.ones(len(captions), 1, dtype=torch.bool)


def _sides(n=12, seed=0):
    rng = np.random.default_rng(seed)
    shift = rng.normal(size=(4, 1, 3, 3))  # the layout: what left clips have and right clips lack
    z = {s: [rng.normal(size=(4, 1, 3, 3)) + (shift if s == "left" else 0) for _ in range(n)] for s in "lr"}
    return {
        "left": [(f"a red ball on the left {i}", x.astype(np.float32)) for i, x in enumerate(z["l"])],
        "right": [(f"a red ball on the right {i}", x.astype(np.float32)) for i, x in enumerate(z["r"])],
    }


def _model(sides, answer):
    """A DiT whose clean-frame estimate x0_hat = x_t - t v is ``answer(mean_left, mean_right, is_left)``."""
    means = {s: torch.from_numpy(np.stack([x for _, x in v]).mean(0)) for s, v in sides.items()}

    def dit(x, audio, t, t_audio, emb, mask, video_frame_seconds):
        is_left = emb[:, 0, 0] > 0
        x0 = torch.stack([answer(means["left"], means["right"], bool(s)) for s in is_left])
        return (x - x0) / t.view(-1, 1, 1, 1, 1), None

    return dit


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda ml, mr, left: ml if left else mr, 1.0),  # the data's layout prior
        (lambda ml, mr, left: (ml + mr) / 2, 0.0),  # side words ignored
        (lambda ml, mr, left: mr if left else ml, -1.0),  # left and right swapped
        (lambda ml, mr, left: (3 * ml + mr) / 4 if left else (ml + 3 * mr) / 4, 0.5),  # half way
    ],
)
def test_layout_score_measures_the_share_of_the_data_layout_the_model_predicts(answer, expected):
    sides = _sides()
    for t in (0.99, 0.9):
        score = lb.layout_score(_model(sides, answer), SideText(), lambda z: z, sides, t)
        assert score == pytest.approx(expected, abs=1e-4)


def test_score_clips_are_held_out_single_object_clips_on_a_side():
    z = np.zeros((4, 1, 2, 2), np.float32)
    sides = [("left",), ("right",), ("left", "right"), ("centre",)] * 110  # 440 clips: 400 held out
    clips = [lb.Clip(f"clip {i}", "", s, z) for i, s in enumerate(sides)]
    picked = lb.score_sides(clips)
    held_out = {c.caption for c in clips[-lb.HOLDOUT :]}
    assert len(picked["left"]) == len(picked["right"]) == 100
    assert all(caption in held_out for v in picked.values() for caption, _ in v)
    with pytest.raises(SystemExit, match="too few"):
        lb.score_sides([lb.Clip("c", "", ("left", "right"), z)] * 440)
