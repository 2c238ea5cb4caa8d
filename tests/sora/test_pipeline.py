"""The generation pipeline: every mode writes a decodable mp4 with the right shape; determinism; the
conditioning modes keep what they were given; export folders load without Lightning. Rolling windows
(extend, storyboard): tests/sora/test_pipeline_rolling.py."""

import json

import numpy as np
import pytest
import torch

from sora import media
from sora.pipeline import MODES, PLANNERS, ROLLING, AVPipeline, GenerationRequest, load_requests, save_clip


@pytest.fixture(scope="module")
def checkpoint(tiny_av_checkpoint):
    return tiny_av_checkpoint


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return AVPipeline.load(checkpoint)


@pytest.fixture(scope="module")
def source_clip(tmp_path_factory):
    """A 24 fps clip with sound, 32x32, 13 frames, a moving bar (the source for extend/v2a/remix)."""
    video = np.zeros((13, 32, 32, 3), np.uint8)
    for i in range(13):
        video[i, :, 2 * i : 2 * i + 4] = (220, 60, 60)
    t = np.arange(round(13 / 24 * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    path = tmp_path_factory.mktemp("src") / "src.mp4"
    media.write_mp4(path, video, 24, audio, 16000)
    return path


def _check(clip, frames, size=32, fps=24):
    assert clip.video.shape == (frames, size, size, 3) and clip.video.dtype == np.uint8
    assert clip.audio.shape == (1, round(frames / fps * 16000))
    assert np.isfinite(clip.audio).all()


def test_t2av_shapes_and_determinism(pipe):
    req = GenerationRequest(prompt="a red ball falls", seed=3, steps=3)
    a, b = pipe.generate(req), pipe.generate(req)
    _check(a, 9)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)
    c = pipe.generate(GenerationRequest(prompt="a red ball falls", seed=4, steps=3))
    assert not np.array_equal(a.video, c.video)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_request_sizes_and_solvers(pipe, solver):
    clip = pipe.generate(
        GenerationRequest(prompt="x", num_frames=13, height=48, width=32, steps=2, solver=solver)
    )
    assert clip.video.shape == (13, 48, 32, 3)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("num_frames", 10, "1 \\+ 4k"),
        ("num_frames", 25, "max_num_frames"),
        ("height", 40, "multiples of 16"),
        ("mode", "dance", "unknown mode"),
        ("steps", 0, "steps"),
    ],
)
def test_bad_requests_are_clear_errors(pipe, field, value, match):
    with pytest.raises(ValueError, match=match):
        pipe.generate(GenerationRequest(**{"prompt": "x", "steps": 2, field: value}))


def test_every_mode_has_one_planner():
    # single-window modes have a planner; extend and storyboard grow a clip in rolling windows
    assert not set(PLANNERS) & set(ROLLING) and set(PLANNERS) | set(ROLLING) == set(MODES)


def test_i2v_first_frame_matches_the_image_after_vae_round_trip(pipe, tmp_path):
    from PIL import Image

    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = (40, 200, 90)
    Image.fromarray(image).save(tmp_path / "first.png")
    clip = pipe.generate(
        GenerationRequest(prompt="x", mode="i2v", image=str(tmp_path / "first.png"), steps=3)
    )
    _check(clip, 9)
    x = media.video_to_tensor(image[None])
    z = pipe.encode_video(x)  # the first latent frame is the image's own latent (causal VAE)
    roundtrip = media.tensor_to_video(pipe.video_vae.decode(pipe.video_vae.denormalize_latents(z))[0])[0]
    assert np.abs(clip.video[0].astype(int) - roundtrip.astype(int)).mean() < 2.0
    torch.testing.assert_close(clip.latents["video"][:, :, :1], z.cpu())


def test_v2a_keeps_the_video_and_a2v_keeps_the_audio(pipe, source_clip):
    v2a = pipe.generate(GenerationRequest(prompt="x", mode="v2a", video=str(source_clip), steps=2))
    _check(v2a, 9)
    assert np.array_equal(v2a.video, media.read_media(source_clip).video[:9])
    a2v = pipe.generate(GenerationRequest(prompt="x", mode="a2v", audio=str(source_clip), steps=2))
    _check(a2v, 9)
    src_audio, _ = media.read_audio(source_clip, duration=9 / 24)
    np.testing.assert_allclose(a2v.audio, src_audio[:, : a2v.audio.shape[1]], atol=1e-6)


def test_remix_strength_zero_returns_the_source(pipe, source_clip):
    plans = []
    clip = pipe.generate(
        GenerationRequest(prompt="y", mode="remix", video=str(source_clip), strength=0.0, steps=3),
        on_plan=plans.append,
    )
    assert plans == [0]  # no sampler step to show on sample.py's bar
    src = media.read_media(source_clip)
    assert np.array_equal(clip.video, src.video[:9])
    np.testing.assert_allclose(clip.audio, src.audio[:, : clip.audio.shape[1]], atol=1e-6)


def test_remix_strength_sets_how_much_of_the_source_survives(pipe, source_clip):
    src = pipe.encode_video(media.video_to_tensor(media.read_media(source_clip).video[:9])).cpu()
    distances, times = [], []
    hook = pipe.dit.register_forward_pre_hook(lambda _, args: times.append(float(args[2].max())))
    try:
        for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
            times.clear()
            req = GenerationRequest(
                prompt="y", mode="remix", video=str(source_clip), strength=strength, steps=3
            )
            clip = pipe.generate(req)
            _check(clip, 9)
            distances.append(float((clip.latents["video"] - src).abs().mean()))
            # the ODE starts at t = strength (none at all for 0): the noise level the source was given
            assert times[:1] == ([] if strength == 0 else [pytest.approx(strength)]), (strength, times)
    finally:
        hook.remove()
    # strength 0 keeps the source's latents; each step up in strength moves the result further from them
    assert distances[0] < 1e-3, distances
    assert all(a + 0.05 < b for a, b in zip(distances, distances[1:])), distances


def test_saved_clip_decodes_with_watermark_provenance_and_latents(pipe, tmp_path):
    from sora import safety

    clip = pipe.generate(GenerationRequest(prompt="a red ball falls", seed=1, steps=2))
    path = save_clip(clip, tmp_path / "a.mp4", config_hash=pipe.config_hash, save_latents=True)
    back = media.read_media(path)
    assert back.video.shape == clip.video.shape and back.fps == pytest.approx(24)
    assert back.audio.shape == clip.audio.shape
    assert safety.verify(str(path))["manifest"]["claims"]["model_config_hash"] == pipe.config_hash
    assert (tmp_path / "a.latents.safetensors").is_file()
    plain = save_clip(clip, tmp_path / "b.mp4", config_hash="", watermark=False)
    assert np.abs(media.read_media(plain).video.astype(int) - back.video.astype(int)).max() > 50


def test_export_round_trip_and_sample_cli(checkpoint, pipe, tmp_path):
    import sample
    from sora.config import compose
    from sora.export import export

    folder = export(checkpoint, tmp_path / "export")
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "README.md",
        "dit.safetensors",
        "video_vae.safetensors",
        "audio_vae.safetensors",
    }
    exported = AVPipeline.load(folder)
    req = GenerationRequest(prompt="a blue box", seed=2, steps=2)
    assert np.array_equal(exported.generate(req).video, pipe.generate(req).video)

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball falls\nhow to build a bomb\n")
    cfg = compose(
        "sample",
        [f"checkpoint={folder}", f"prompts_file={prompts}", "steps=2", f"out_dir={tmp_path / 'samples'}"],
    )
    manifest = sample.run(cfg)
    assert len(manifest["clips"]) == 1 and manifest["rejected"][0]["rule"].startswith("blocklist:")
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.mp4")) == ["000_t2av.mp4"]
    assert (
        json.loads((tmp_path / "samples" / "samples.json").read_text())["model_config_hash"]
        == pipe.config_hash
    )


def test_load_requests_from_jsonl(tmp_path):
    from omegaconf import OmegaConf

    f = tmp_path / "r.jsonl"
    f.write_text('{"prompt": "a", "mode": "i2v", "image": "x.png"}\n{"prompt": "b", "seed": 9}\n')
    reqs = load_requests(OmegaConf.create({"prompts_file": str(f), "steps": 4, "seed": 1}))
    assert [(r.prompt, r.mode, r.seed, r.steps) for r in reqs] == [("a", "i2v", 1, 4), ("b", "t2av", 9, 4)]
    f.write_text('{"prompt": "a", "colour": "red"}\n')
    with pytest.raises(ValueError, match="unknown request fields"):
        load_requests(OmegaConf.create({"prompts_file": str(f)}))
