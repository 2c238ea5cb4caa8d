"""Learned-feature metrics from local weights, end to end with tiny randomly initialised networks the test
builds and saves (TorchScript via torch.jit.script, Hugging Face via save_pretrained); nothing downloads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from eval.clip import EvalClip
from eval.learned import ClipScore, LPIPSMetric, VideoFeatures, build_learned
from eval.suite import run
from sora.config import compose

transformers = pytest.importorskip("transformers")


class TinyI3D(nn.Module):
    """(N, 3, T, S, S) in [-1, 1] -> (N, 6): the I3D contract."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean(dim=(2, 3, 4))


class TinyLPIPS(nn.Module):
    """(N, 3, H, W) x 2 -> (N, 1, 1, 1): squared distance of random conv features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.conv(x) - self.conv(y)) ** 2).mean(dim=(1, 2, 3), keepdim=True)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Tiny random networks saved the way users would hand them over."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing
    from transformers import (
        CLIPConfig,
        CLIPModel,
        PreTrainedTokenizerFast,
        VideoMAEConfig,
        VideoMAEModel,
    )

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.jit.script(TinyI3D()).save(str(root / "i3d.pt"))
    torch.jit.script(TinyLPIPS()).save(str(root / "lpips.pt"))
    mae = VideoMAEConfig(
        image_size=16,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    VideoMAEModel(mae).save_pretrained(root / "videomae")
    words = ["[PAD]", "[UNK]", "a", "red", "blue", "ball", "cube", "falls", "the", "on", "left", "[EOS]"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.post_processor = TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 11)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    # CLIP pools the text at its end-of-text token, as the real tokenizer appends it
    text = dict(
        vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1, eos_token_id=11
    )
    text.update(num_attention_heads=2, max_position_embeddings=32, projection_dim=8)
    vision = dict(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1)
    vision.update(num_attention_heads=2, projection_dim=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(
        root / "clip"
    )
    fast.save_pretrained(root / "clip")
    return {
        "i3d": root / "i3d.pt",
        "lpips": root / "lpips.pt",
        "videomae": root / "videomae",
        "clip": root / "clip",
    }


def _clip(seed: int, frames: int = 6, prompt: str = "a red ball falls") -> EvalClip:
    video = np.random.default_rng(seed).integers(0, 256, (frames, 16, 16, 3), dtype=np.uint8)
    return EvalClip(video=video, fps=8.0, prompt=prompt)


def test_torchscript_and_hf_video_encoders_follow_the_i3d_contract(weights):
    clips = [_clip(i).video for i in range(3)]
    script = VideoFeatures(weights["i3d"], num_frames=4, size=16)
    x = torch.stack([script.preprocess(v) for v in clips])  # (3, 3, 4, 16, 16) in [-1, 1]
    assert torch.allclose(torch.from_numpy(script(clips)), torch.jit.load(str(weights["i3d"]))(x), atol=1e-6)
    hf = VideoFeatures(weights["videomae"])
    assert (hf.num_frames, hf.size) == (4, 16)  # from the folder's config
    model = transformers.AutoModel.from_pretrained(weights["videomae"]).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    x = torch.stack([hf.preprocess(v) for v in clips])
    pixels = ((x.transpose(1, 2) + 1) / 2 - mean) / std  # (N, T, 3, S, S), ImageNet-normalised
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state.mean(dim=1)
    assert torch.allclose(torch.from_numpy(hf(clips)), expected, atol=1e-5)


def test_lpips_judges_only_the_generated_frames(weights):
    lpips = LPIPSMetric(weights["lpips"])
    truth = _clip(0)
    changed = truth.video.copy()
    changed[0] = 255 - changed[0]  # only the conditioning frame differs
    clip = dataclasses.replace(truth, video=changed, reference=truth)
    assert lpips(clip)["lpips"] > 0
    assert lpips(dataclasses.replace(clip, given_frames=1))["lpips"] == 0.0
    other = dataclasses.replace(_clip(1), reference=truth, given_frames=1)
    assert lpips(other)["lpips"] > 0


def test_clip_score_is_the_mean_frame_text_cosine(weights):
    score = ClipScore(weights["clip"], frames=3)
    clip = _clip(0, frames=7)
    value = score(clip)["clip_score"]
    model = transformers.AutoModel.from_pretrained(weights["clip"]).eval()
    tok = transformers.AutoTokenizer.from_pretrained(weights["clip"])
    frames = torch.from_numpy(clip.video[[0, 3, 6]]).float().permute(0, 3, 1, 2) / 255  # 3 evenly spaced
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        image = ClipScore._features(model.get_image_features(pixel_values=(frames - mean) / std))
        text = ClipScore._features(model.get_text_features(**tok([clip.prompt], return_tensors="pt")))
    expected = torch.nn.functional.cosine_similarity(image, text).mean()
    assert value == pytest.approx(float(expected), abs=1e-5) and -1 <= value <= 1
    assert score(dataclasses.replace(clip, prompt="a blue cube"))["clip_score"] != pytest.approx(value)


def test_learned_config_is_checked_and_local_only(weights, tmp_path):
    assert not build_learned(None).registry and not build_learned({"fvd": {"weights": None}}).distribution
    with pytest.raises(ValueError, match="not found .*nothing is downloaded"):
        build_learned({"lpips": {"weights": str(tmp_path / "missing.pt")}})
    with pytest.raises(ValueError, match="unknown learned metric"):
        build_learned({"fid": {"weights": "x"}})
    with pytest.raises(ValueError, match="Hugging Face folder"):
        build_learned({"clip_score": {"weights": str(weights["lpips"])}})


def test_suite_runs_learned_metrics_end_to_end(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = tmp_path / "prompts"
    scenes = ["suite.num_scenes=2", "suite.families=[fall,collide]", "suite.num_frames=9"]
    run(compose("eval", [f"prompts_out={prompts}", *scenes, "suite.modes=[t2av,i2v]"]))
    for row in map(json.loads, (prompts / "prompts.jsonl").read_text().splitlines()):
        (prompts / f"{row['id']}.mp4").write_bytes(
            (prompts / "ground_truth" / f"{row['id']}.mp4").read_bytes()
        )
    learned = [
        f"suite.learned.fvd.weights={weights['videomae']}",
        f"suite.learned.lpips.weights={weights['lpips']}",
        f"suite.learned.clip_score.weights={weights['clip']}",
    ]
    cfg = compose(
        "eval",
        [
            f"clips={prompts}",
            f"out_dir={tmp_path / 'out'}",
            "suite.metrics=[persistence]",
            "suite.broken=[mirrored]",
        ]
        + ["suite.distribution_metrics=[]", *learned],
    )
    results = run(cfg)
    summary = results["summary"]
    assert "fvd" in results["summary_numbers"] and "fvd" in results["summary_descriptions"]
    # the perfect 'model' (ground truth clips) is at distance 0; the mirrored truth is not
    assert summary["generated/t2av"]["fvd"] == pytest.approx(0.0, abs=1e-6)
    assert summary["broken/mirrored"]["fvd"] > 1e-6
    generated = [c for c in results["clips"] if c["group"].startswith("generated/")]
    assert len(generated) == 4 and all(c["metrics"]["lpips"] == 0.0 for c in generated)
    assert all("clip_score" in c["metrics"] for c in results["clips"])
    truth = [c for c in results["clips"] if c["group"] == "ground_truth"]
    assert all("lpips" not in c["metrics"] and not c["failures"] for c in truth)
    assert results["failures"]["total"] == 0 and not results["failures"]["distribution"]
