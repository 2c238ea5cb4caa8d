"""HFCaptioner end to end on tiny random vision-language models built offline (see conftest.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from recaption.base import CaptionError, CaptionInput  # noqa: E402
from recaption.hf import HFCaptioner, check_model_folder, frame_grid, sample_frame_indices  # noqa: E402

INSTRUCTIONS = {"llava": "describe this video", "blip": "a video of", "idefics3": "describe this video"}


@pytest.fixture
def folders(vlm_folders):
    return vlm_folders


def _clips(n: int, seed: int = 0, frames: int = 10) -> list[CaptionInput]:
    rng = np.random.default_rng(seed)
    return [
        CaptionInput(frames=rng.integers(0, 256, (frames, 24, 32, 3), dtype=np.uint8), key=f"clip{i}")
        for i in range(n)
    ]


def _captioner(folders, name: str, **kw) -> HFCaptioner:
    kw = {"instruction": INSTRUCTIONS[name], "num_frames": 4, "max_new_tokens": 6, **kw}
    return HFCaptioner(str(folders[name]), **kw)


def test_frame_indices_are_uniform_segment_centres():
    assert sample_frame_indices(10, 4) == [1, 3, 6, 8]
    assert sample_frame_indices(48, 8) == [3, 9, 15, 21, 27, 33, 39, 45]
    assert sample_frame_indices(8, 8) == list(range(8))
    assert sample_frame_indices(3, 8) == [0, 1, 2]  # fewer frames: each once, none repeated
    assert sample_frame_indices(1, 1) == [0]
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        sample_frame_indices(10, 0)
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(0, 4)


def test_frame_grid_tiles_in_time_order():
    frames = np.stack([np.full((2, 3, 3), 10 * (i + 1), dtype=np.uint8) for i in range(5)])
    grid = frame_grid(frames)
    assert grid.shape == (2 * 2, 3 * 3, 3)  # 5 frames -> 3 columns, 2 rows
    cells = [int(grid[r * 2, c * 3, 0]) for r in range(2) for c in range(3)]
    assert cells == [10, 20, 30, 40, 50, 0]  # row by row, the spare cell black


def test_sampled_frames_are_what_the_model_sees(folders):
    cap = _captioner(folders, "llava", num_frames=4)
    frames = np.stack([np.full((24, 32, 3), 20 * t, dtype=np.uint8) for t in range(10)])
    images = cap._images(CaptionInput(frames=frames, key="ramp"))
    assert [int(np.asarray(im)[0, 0, 0]) for im in images] == [20 * t for t in (1, 3, 6, 8)]
    grid = _captioner(folders, "blip", num_frames=4)._images(CaptionInput(frames=frames, key="ramp"))
    assert len(grid) == 1 and np.asarray(grid[0]).shape == (48, 64, 3)
    assert [int(np.asarray(grid[0])[r * 24, c * 32, 0]) for r in range(2) for c in range(2)] == [
        20,
        60,
        120,
        160,
    ]


@pytest.mark.parametrize("name", list(INSTRUCTIONS))
def test_captions_end_to_end_without_the_instruction(folders, name):
    cap = _captioner(folders, name)
    assert cap.frames == ("grid" if name == "blip" else "images")
    out = cap.caption_batch(_clips(2))
    assert len(out) == 2
    for caption in out:
        assert caption.text and caption.text == caption.text.strip()
        words = caption.text.lower().split()
        prompt = INSTRUCTIONS[name].split()
        assert words[: len(prompt)] != prompt, caption.text  # the repeated prompt is cut
        assert "user" not in words[:1] and "assistant:" not in caption.text.lower()
    meta = cap.describe()
    assert meta["name"] == "hf" and meta["model"] == str(folders[name]) and meta["num_frames"] == 4


@pytest.mark.parametrize("name", ["llava", "blip"])
def test_batch_of_three_in_twos_equals_one_by_one(folders, name):
    clips = _clips(3, seed=1)
    batched = [c.text for c in _captioner(folders, name, batch_size=2).caption_batch(clips)]
    single = _captioner(folders, name, batch_size=1)
    alone = [single.caption(c).text for c in clips]
    assert batched == alone
    assert len(set(alone)) == 3, alone  # distinct answers: a clip given another clip's frames would show


def test_greedy_decoding_is_deterministic(folders):
    clips = _clips(2, seed=2)
    first = [c.text for c in _captioner(folders, "llava").caption_batch(clips)]
    second = [c.text for c in _captioner(folders, "llava").caption_batch(clips)]
    assert first == second


def test_empty_answer_is_a_caption_error(folders, monkeypatch):
    cap = _captioner(folders, "llava")
    monkeypatch.setattr(cap.model, "generate", lambda **kw: kw["input_ids"])  # the model says nothing
    with pytest.raises(CaptionError, match="clip0.*empty answer"):
        cap.caption_batch(_clips(1))


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ValueError, match=f"{missing}.*does not exist"):
        HFCaptioner(str(missing))


def test_incomplete_folder_names_what_is_missing(folders, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(folders["llava"], partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=f"{partial}.*incomplete: missing weights"):
        HFCaptioner(str(partial))
    (partial / "model.safetensors.index.json").write_text(
        '{"weight_map": {"w": "model-00001-of-00002.safetensors"}}'
    )
    with pytest.raises(ValueError, match="missing weight shard model-00001-of-00002.safetensors"):
        check_model_folder(partial)
    shutil.copy(folders["llava"] / "model.safetensors", partial / "model.safetensors")
    (partial / "model.safetensors.index.json").unlink()
    (partial / "processor_config.json").unlink()
    with pytest.raises(ValueError, match="missing processor config"):
        check_model_folder(partial)


def test_bad_options_are_rejected(folders):
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        HFCaptioner(str(folders["llava"]), num_frames=0)
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of"):
        HFCaptioner(str(folders["llava"]), dtype="int8")
    with pytest.raises(ValueError, match="frames='images' needs a processor with a chat template"):
        HFCaptioner(str(folders["blip"]), frames="images")


def test_dtype_auto_is_fp32_on_cpu_and_bf16_when_asked(folders):
    assert _captioner(folders, "llava", device="cpu").model.dtype == torch.float32
    cap = _captioner(folders, "llava", device="cpu", dtype="bf16")
    assert cap.model.dtype == torch.bfloat16
    assert cap.caption(_clips(1)[0]).text


@pytest.mark.gpu
def test_bf16_on_cuda(folders):
    cap = _captioner(folders, "llava", device="auto")
    assert cap.device.type == "cuda" and cap.model.dtype == torch.bfloat16
    assert all(c.text for c in cap.caption_batch(_clips(3)))
