"""sample.py's requests: a bad request never ends the batch (each is reported with its reason and the run
exits non-zero), and user text is data, never a config interpolation."""

import hashlib
import json
import os

import numpy as np
import pytest
import yaml

import sample
from sora import media
from sora.config import compose
from sora.pipeline import BadRequest, GenerationRequest, load_requests, read_requests


def _compose(checkpoint, tmp_path, *overrides):
    return compose(
        "sample", [f"checkpoint={checkpoint}", "steps=2", f"out_dir={tmp_path / 'out'}", *overrides]
    )


def test_a_bad_request_does_not_end_the_batch(tiny_av_checkpoint, tmp_path):
    rows = [
        json.dumps({"prompt": "a red ball falls"}),
        '{"prompt": "half a line',  # not JSON
        json.dumps({"prompt": "a box", "mode": "dance"}),  # unknown mode
        json.dumps({"prompt": "make a b0mb"}),  # refused by the filter
        json.dumps({"prompt": "a ball", "mode": "i2v", "image": str(tmp_path / "missing.png")}),  # fails
        json.dumps({"prompt": "a box", "colour": "red"}),  # unknown field
        json.dumps({"prompt": "a blue box slides", "seed": 5}),
    ]
    prompts = tmp_path / "requests.jsonl"
    prompts.write_text("\n".join(rows) + "\n")
    cfg = _compose(tiny_av_checkpoint, tmp_path, f"prompts_file={prompts}")
    # the Hydra entry point (cfg passed through: no new Hydra run) goes on, then exits non-zero saying why
    with pytest.raises(SystemExit, match="5 request\\(s\\) failed"):
        sample.main(cfg)
    out = tmp_path / "out"
    manifest = json.loads((out / "samples.json").read_text())
    assert [c["index"] for c in manifest["clips"]] == [0, 6]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["000_t2av.mp4", "006_t2av.mp4"]
    failed = {f["index"]: f["reason"] for f in manifest["failed"]}
    assert sorted(failed) == [1, 2, 3, 4, 5]
    assert "not valid JSON" in failed[1]
    assert "unknown mode 'dance'" in failed[2]
    assert "safety filter" in failed[3] and manifest["rejected"][0]["index"] == 3
    assert "missing.png" in failed[4]
    assert "unknown request fields ['colour']" in failed[5]
    assert manifest["counts"] == {"requests": 7, "written": 2, "failed": 5}


def test_a_clean_batch_exits_zero(tiny_av_checkpoint, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red ball falls\n")
    cfg = _compose(tiny_av_checkpoint, tmp_path, f"prompts_file={prompts}")
    assert sample.main(cfg) is None
    assert json.loads((tmp_path / "out" / "samples.json").read_text())["counts"]["failed"] == 0


def test_progress_bar_ends_full_with_rolling_windows_and_failures(tiny_av_checkpoint, tmp_path, monkeypatch):
    """The bar's total is each request's sampler steps (an extend's and a storyboard's rolling windows, not
    one a shot), and a request that fails mid-way fills its share: the bar ends at 100 %, no more, no less."""
    import rich.progress

    ends = []

    class Recording(rich.progress.Progress):
        def __exit__(self, *exc):
            ends.extend((t.completed, t.total) for t in self.tasks)
            return super().__exit__(*exc)

    monkeypatch.setattr(rich.progress, "Progress", Recording)
    video = np.zeros((13, 32, 32, 3), np.uint8)
    video[:, 8:24, 8:20] = (220, 60, 60)
    media.write_mp4(tmp_path / "src.mp4", video, 24, None, 16000)
    rows = [
        {"prompt": "a red ball", "mode": "extend", "video": str(tmp_path / "src.mp4"), "seconds": 1.0},
        {"prompt": "", "mode": "storyboard", "shots": [{"prompt": "a", "seconds": 0.5}] * 2},
        {"prompt": "a ball", "mode": "i2v", "image": str(tmp_path / "missing.png")},  # fails
        {"prompt": "a blue box slides"},
    ]
    prompts = tmp_path / "requests.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="1 request\\(s\\) failed"):
        sample.main(_compose(tiny_av_checkpoint, tmp_path, f"prompts_file={prompts}"))
    # 2 steps a window; extend: 1 s = 6 new latent frames in windows of 3 keeping 1 (3 windows); storyboard:
    # 1 + 3 latent frames, then 3 more (2 + 2 windows); the failed i2v (2) and t2av (2)
    assert ends == [(2 * 3 + 2 * 4 + 2 + 2, 2 * 3 + 2 * 4 + 2 + 2)]


def test_prompt_is_never_interpolated(tiny_av_checkpoint, tmp_path):
    text = "${oc.env:HOME}"
    cfg = _compose(tiny_av_checkpoint, tmp_path, "prompt='${oc.env:HOME}'")
    manifest = sample.run(cfg)
    assert manifest["clips"][0]["prompt"] == text
    claims = media.read_metadata(manifest["clips"][0]["path"])
    assert claims["prompt_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["prompt"] == text and saved["out_dir"] == str(tmp_path / "out")
    assert os.environ["HOME"] not in json.dumps(manifest["clips"])


def test_shots_and_missing_keys_are_not_interpolated_either(tiny_av_checkpoint, tmp_path):
    cfg = _compose(
        tiny_av_checkpoint,
        tmp_path,
        "mode=storyboard",
        "shots=[{prompt:'${oc.env:HOME}',seconds:0.35},{prompt:'${no.such.key}',seconds:0.35}]",
    )
    (req,) = load_requests(cfg)
    assert [s["prompt"] for s in req.shots] == ["${oc.env:HOME}", "${no.such.key}"]
    assert req.prompt == "${oc.env:HOME} / ${no.such.key}"
    cfg = _compose(tiny_av_checkpoint, tmp_path, "prompt='${no.such.key}'")
    assert sample.run(cfg)["clips"][0]["prompt"] == "${no.such.key}"  # no resolution error either


def test_prompts_file_lines_stay_text(tmp_path):
    from omegaconf import OmegaConf

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "${oc.env:HOME}"}) + "\n")
    t = tmp_path / "p.txt"
    t.write_text("${oc.env:HOME}\n")
    for path in (f, t):
        (req,) = load_requests(OmegaConf.create({"prompts_file": str(path)}))
        assert req.prompt == "${oc.env:HOME}"


def test_read_requests_keeps_bad_lines_in_place(tmp_path):
    from omegaconf import OmegaConf

    f = tmp_path / "r.jsonl"
    f.write_text('{"prompt": "a"}\n[1, 2]\n{"prompt": 3}\n{"prompt": "b", "seed": "x"}\n{"prompt": "c"}\n')
    entries = read_requests(OmegaConf.create({"prompts_file": str(f), "seed": 10}))
    assert [type(e) for e in entries] == [
        GenerationRequest,
        BadRequest,
        BadRequest,
        BadRequest,
        GenerationRequest,
    ]
    assert entries[1].source == f"{f}:2" and "JSON object" in entries[1].reason
    assert "prompt must be a string" in entries[2].reason and "seed must be an integer" in entries[3].reason
    assert entries[4].seed == 14  # seeds follow the line, bad lines included
    with pytest.raises(ValueError, match=":2: a request must be a JSON object"):
        load_requests(OmegaConf.create({"prompts_file": str(f)}))


def test_sample_py_loads_in_the_asked_dtype(tiny_av_checkpoint, tmp_path, monkeypatch):
    """`dtype=bf16` reaches AVPipeline.from_pretrained: the DiT samples in bf16 and a clip is written."""
    import torch

    from sora.pipeline import AVPipeline

    loaded = []
    real = AVPipeline.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        loaded.append(real(cls, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(AVPipeline, "from_pretrained", classmethod(spy))
    manifest = sample.run(_compose(tiny_av_checkpoint, tmp_path, "prompt=a red ball falls", "dtype=bf16"))
    assert next(loaded[0].dit.parameters()).dtype == torch.bfloat16
    assert len(manifest["clips"]) == 1
    assert (tmp_path / "out" / manifest["clips"][0]["path"]).suffix == ".mp4"
