"""sample.py upsample=true: prompts (and storyboard shots) are upsampled, the safety filter reads both texts,
and samples.json and the clip's provenance record keep both."""

from __future__ import annotations

import hashlib
import json

import sample
from recaption.upsample import TemplateUpsampler, world_captions
from sora import media
from sora.config import compose
from sora.pipeline import GenerationRequest, upsample_request

CAPTIONS = "A red ball on the left zooms forbiddenly. A blue box falls gently."


def _shard(path):
    from data_pipelines.shard_writer import ShardWriter

    with ShardWriter(path) as writer:
        writer.write("k0", {"txt": CAPTIONS})
    return path


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_upsampled_prompts_are_filtered_generated_and_recorded(tiny_av_checkpoint, tmp_path):
    shard = _shard(tmp_path / "captions-000000.tar")
    rows = [
        {"prompt": "a green ball"},
        {"prompt": "a red ball on the right"},  # its template says "forbiddenly": refused after upsampling
        {
            "prompt": "two shots",
            "mode": "storyboard",
            "shots": [
                {"prompt": "a white box", "seconds": 0.2},
                {"prompt": "a cyan ball on the left", "seconds": 0.2},
            ],
        },
    ]
    prompts = tmp_path / "requests.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = compose(
        "sample",
        [
            f"checkpoint={tiny_av_checkpoint}",
            "steps=2",
            f"out_dir={tmp_path / 'out'}",
            f"prompts_file={prompts}",
            "upsample=true",
            f"upsampler.captions={shard}",
            "safety.blocklist=[forbiddenly]",
        ],
    )
    manifest = sample.run(cfg)
    assert [c["index"] for c in manifest["clips"]] == [0]
    clip = manifest["clips"][0]
    assert clip["prompt"] == "a green ball"
    assert clip["upsampled_prompt"] == "A green ball falls gently."
    assert [r["index"] for r in manifest["rejected"]] == [1, 2]
    assert manifest["rejected"][0]["upsampled_prompt"] == "A red ball on the right zooms forbiddenly."
    assert manifest["upsampler"]["name"] == "template" and manifest["upsampler"]["object"] == 2
    record = media.read_metadata(clip["path"])
    assert record["prompt_sha256"] == _sha("a green ball")
    assert record["upsampled_prompt_sha256"] == _sha("A green ball falls gently.")
    assert json.loads((tmp_path / "out" / "samples.json").read_text())["clips"] == manifest["clips"]


def test_without_upsample_nothing_changes(tiny_av_checkpoint, tmp_path):
    cfg = compose(
        "sample",
        [f"checkpoint={tiny_av_checkpoint}", "steps=2", f"out_dir={tmp_path}", "prompt=a green ball"],
    )
    manifest = sample.run(cfg)
    assert "upsampled_prompt" not in manifest["clips"][0] and "upsampler" not in manifest
    record = media.read_metadata(manifest["clips"][0]["path"])
    assert record["prompt_sha256"] == _sha("a green ball") and "upsampled_prompt_sha256" not in record


def test_storyboard_shots_are_upsampled_with_their_own_seeds():
    up = TemplateUpsampler(list(world_captions(200)))
    shots = [
        {"prompt": "a red ball falls", "seconds": 1.0},
        {"prompt": "a blue box on the left", "seconds": 2.0},
    ]
    req = GenerationRequest(
        prompt="a red ball falls / a blue box on the left", mode="storyboard", seed=4, shots=shots
    )
    out = upsample_request(req, up)
    assert [s["prompt"] for s in out.shots] == [up.upsample(s["prompt"], 4 + i) for i, s in enumerate(shots)]
    assert [s["seconds"] for s in out.shots] == [1.0, 2.0]
    assert out.prompt == " / ".join(s["prompt"] for s in out.shots)
    assert req.shots[0]["prompt"] == "a red ball falls"  # the user's request is not modified
    single = upsample_request(GenerationRequest(prompt="a red ball falls", seed=9), up)
    assert single.prompt == up.upsample("a red ball falls", 9) != "a red ball falls"
