"""Clips longer than the model's window (extend, storyboard): the source comes back in front of the new
seconds, every window keeps the clip's last latent frames clean and unchanged, windows are stitched in latent
space and decoded once, and a storyboard's later shot continues the earlier one."""

import numpy as np
import pytest
import torch

from sora import media
from sora.diffusion.sampler import rolling_windows
from sora.pipeline import AVPipeline, GenerationRequest

# the tiny model's window: 9 frames = 3 latent frames at 24 fps; default context: 1 latent frame


@pytest.fixture(scope="module")
def pipe(tiny_av_checkpoint):
    return AVPipeline.load(tiny_av_checkpoint)


def _write_source(path, frames: int, with_audio: bool = True):
    video = np.zeros((frames, 32, 32, 3), np.uint8)
    for i in range(frames):
        video[i, 8:24, 2 * i : 2 * i + 6] = (220, 60, 60)
    audio = None
    if with_audio:
        t = np.arange(round(frames / 24 * 16000)) / 16000
        audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    media.write_mp4(path, video, 24, audio, 16000)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """13 frames (1 + 4 * 3: 4 latent frames) with a moving bar and a tone."""
    return _write_source(tmp_path_factory.mktemp("src") / "src.mp4", 13)


class _Calls:
    """The DiT's inputs on every call: video/audio latents and their per-frame timesteps (conditional half
    of the guidance batch)."""

    def __init__(self, pipe):
        self.calls = []
        self.hook = pipe.dit.register_forward_pre_hook(self._record)

    def _record(self, _, args):
        v, a, tv, ta = args[:4]
        self.calls.append((v[:1].float().clone(), a[:1].float().clone(), tv[:1].clone(), ta[:1].clone()))

    def __enter__(self):
        return self.calls

    def __exit__(self, *exc):
        self.hook.remove()


def _roundtrip(pipe, frames: np.ndarray) -> np.ndarray:
    z = pipe.encode_video(media.video_to_tensor(frames))
    return media.tensor_to_video(pipe.video_vae.decode(pipe.video_vae.denormalize_latents(z))[0])


def test_extend_returns_the_source_then_the_new_seconds(pipe, source):
    clip = pipe.generate(
        GenerationRequest(prompt="x", mode="extend", video=str(source), seconds=0.5, steps=1)
    )
    # 0.5 s at 24 fps = 3 latent frames of 4 frames each after the 13 source frames; audio the same seconds
    assert clip.video.shape == (13 + 12, 32, 32, 3)
    assert clip.audio.shape == (1, round(25 / 24 * 16000)) and np.isfinite(clip.audio).all()
    src = media.read_media(source)
    # the first frames are the source after one VAE round trip (decoded with the rest: causal, no seam)
    diff = np.abs(clip.video[:13].astype(int) - _roundtrip(pipe, src.video).astype(int))
    assert diff.mean() < 1.0, diff.mean()
    # ... and its latents exactly (given, never changed), then the new ones
    z_src = pipe.encode_video(media.video_to_tensor(src.video)).cpu()
    assert clip.latents["video"].shape[2] == 4 + 3
    torch.testing.assert_close(clip.latents["video"][:, :, :4], z_src)
    za_src = pipe.encode_audio(torch.from_numpy(src.audio), round(13 / 24 * 16000)).cpu()
    # the source's audio latents that lie wholly inside it are kept (the last one is zero-padded past it)
    torch.testing.assert_close(clip.latents["audio"][:, :, : za_src.shape[2] - 1], za_src[:, :, :-1])


def test_extend_without_seconds_is_one_window_and_odd_lengths_keep_every_source_frame(pipe, tmp_path):
    src_path = _write_source(tmp_path / "odd.mp4", 15)  # 15 = 2 + (1 + 4 * 3): 2 leading frames
    src = media.read_media(src_path)
    clip = pipe.generate(GenerationRequest(prompt="x", mode="extend", video=str(src_path), steps=1))
    # one window of 3 latent frames keeping 1: 2 new latent frames = 8 frames after all 15 source frames
    assert clip.video.shape[0] == 15 + 8
    assert np.array_equal(clip.video[:2], src.video[:2])  # the leading frames come back as given
    assert np.abs(clip.video[2:15].astype(int) - _roundtrip(pipe, src.video[2:]).astype(int)).mean() < 1.0
    lead = round(2 / 24 * 16000)
    np.testing.assert_array_equal(clip.audio[:, :lead], src.audio[:, :lead])
    assert clip.audio.shape[1] == lead + round(21 / 24 * 16000)


def test_extend_of_a_silent_source_keeps_its_silence(pipe, tmp_path):
    src_path = _write_source(tmp_path / "silent.mp4", 13, with_audio=False)
    req = GenerationRequest(prompt="x", mode="extend", video=str(src_path), seconds=0.5, steps=1)
    clip = pipe.generate(req)
    assert clip.video.shape[0] == 13 + 12
    # the source had no sound: silence under the frames before the first window, generated sound after it
    first_window_audio = round(3 * 4 / 24 * 25) * 640  # the window starts at latent frame 3 of the source
    assert not clip.audio[:, :first_window_audio].any() and clip.audio[:, first_window_audio:].any()


def test_rolling_windows_keep_the_context_clean_and_unchanged(pipe, source):
    req = GenerationRequest(
        prompt="x", mode="extend", video=str(source), seconds=0.5, context_latents=2, steps=2, seed=5
    )
    with _Calls(pipe) as calls:
        clip = pipe.generate(req)
    windows = rolling_windows(4, 3, 3, 2)  # 4 source latents, 3 new, windows of 3 keeping 2: 1 new each
    assert len(windows) == 3 and len(calls) == 2 * len(windows)
    z, za = clip.latents["video"].to(calls[0][0].device), clip.latents["audio"]
    for i, (v, a, tv, ta) in enumerate(calls):
        w = windows[i // 2]
        # the window's first latent frames are the clip's own at timestep 0, the same at every step
        assert (tv[0, : w.context] == 0).all() and (tv[0, w.context :] > 0).all(), (i, tv)
        torch.testing.assert_close(v[:, :, : w.context], z[:, :, w.start : w.start + w.context])
        # the audio of the context's seconds is clean too, and is the clip's own audio there
        first, known = round(w.start * 4 / 24 * 25), int((ta[0] == 0).sum())
        assert known >= 1 and (ta[0, :known] == 0).all() and (ta[0, known:] > 0).all(), (i, ta)
        torch.testing.assert_close(a[:, :, :known], za[:, :, first : first + known].to(a.device))
    assert clip.video.shape[0] == 13 + 12


def test_storyboard_second_shot_continues_the_first(pipe):
    shots = [{"prompt": "a red ball falls", "seconds": 8 / 24}, {"prompt": "it rolls away", "seconds": 0.5}]
    req = GenerationRequest(prompt="", mode="storyboard", shots=shots, steps=2, seed=3)
    with _Calls(pipe) as calls:
        clip = pipe.generate(req)
    # shot 1: 1 + 8 / 4 = 3 latent frames (one window); shot 2: 0.5 s = 3 more (2 windows keeping 1)
    assert clip.latents["video"].shape[2] == 6 and clip.video.shape[0] == 1 + 4 * 5
    assert clip.audio.shape[1] == round(21 / 24 * 16000)
    z = clip.latents["video"].to(calls[0][0].device)
    shot2 = calls[2:]  # 2 steps of shot 1's window, then shot 2's windows
    # shot 2 starts from shot 1's last latent frame, clean, and is conditioned on its own prompt
    assert (shot2[0][2][0, 0] == 0).all() and (shot2[0][2][0, 1:] > 0).all()
    torch.testing.assert_close(shot2[0][0][:, :, :1], z[:, :, 2:3])
    # shot 1 alone gives the same first latents: shot 2 continues it rather than starting over
    one = pipe.generate(GenerationRequest(prompt="", mode="storyboard", shots=shots[:1], steps=2, seed=3))
    torch.testing.assert_close(clip.latents["video"][:, :, :3], one.latents["video"])
    # decoded once: the first shot's frames are the same decoded alone or followed by shot 2 (causal VAE)
    assert np.abs(clip.video[:9].astype(int) - one.video.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "fields,windows",
    [
        ({"mode": "extend", "seconds": 0.5, "context_latents": 2}, 3),  # 1 new latent frame a window
        ({"mode": "extend"}, 1),  # no seconds: one window
        (
            {
                "mode": "storyboard",
                "shots": [{"prompt": "a", "seconds": 8 / 24}, {"prompt": "b", "seconds": 0.5}],
            },
            3,
        ),
        ({"mode": "t2av"}, 1),
    ],
)
def test_on_plan_announces_every_progress_call(pipe, source, fields, windows):
    """sample.py sizes its progress bar from ``on_plan``: it must count the rolling windows, not the shots."""
    video = {"video": str(source)} if fields["mode"] == "extend" else {}
    calls, plans = [], []
    req = GenerationRequest(**{"prompt": "x", "steps": 2, **video, **fields})
    pipe.generate(req, progress=calls.append, on_plan=plans.append)
    assert plans == [2 * windows] and len(calls) == 2 * windows


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"mode": "extend", "seconds": 0}, "seconds must be a number of seconds > 0"),
        ({"mode": "extend", "seconds": "2"}, "seconds must be a number"),
        ({"mode": "extend", "context_latents": 3}, "context_latents must be an integer in \\[1, 2\\]"),
        ({"mode": "storyboard", "shots": [{"prompt": "a", "seconds": -1}]}, "shots\\[0\\].seconds"),
        ({"mode": "storyboard", "shots": [{"seconds": 1}]}, "shots\\[0\\] must be"),
        ({"mode": "extend"}, "mode=extend needs video=PATH"),
        ({"mode": "t2av", "seconds": 4}, "seconds is for mode=extend"),
        ({"mode": "i2v", "context_latents": 1}, "context_latents is for mode=extend or storyboard"),
    ],
)
def test_bad_rolling_requests_are_clear_errors(pipe, source, fields, match):
    video = {"video": str(source)} if fields.get("mode") == "extend" and fields != {"mode": "extend"} else {}
    with pytest.raises(ValueError, match=match):
        pipe.generate(GenerationRequest(prompt="x", steps=1, **video, **fields))
