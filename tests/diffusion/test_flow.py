"""Rectified-flow math: noising, targets, timestep sampling and shift, masked loss, curriculum."""

from __future__ import annotations

import math

import pytest
import torch

from sora.diffusion.flow import (
    MODES,
    ConditioningCurriculum,
    add_noise,
    expand_t,
    flow_loss,
    sample_logit_normal,
    shift_timesteps,
    token_count_shift,
    velocity_target,
)


def test_add_noise_endpoints_and_velocity():
    x0, noise = torch.randn(2, 3, 4, 5, 6), torch.randn(2, 3, 4, 5, 6)
    assert torch.equal(add_noise(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(add_noise(x0, noise, torch.ones(2)), noise)
    # The path is a straight line whose derivative in t is the velocity target.
    t, dt = torch.tensor([0.2, 0.6]), 1e-3
    deriv = (add_noise(x0, noise, t + dt) - add_noise(x0, noise, t)) / dt
    torch.testing.assert_close(deriv, velocity_target(x0, noise), atol=1e-2, rtol=1e-2)


def test_add_noise_per_frame_and_per_position():
    x0, noise = torch.randn(2, 3, 4, 5, 6), torch.randn(2, 3, 4, 5, 6)
    t = torch.tensor([[0.0, 1.0, 0.5, 0.0], [1.0, 1.0, 0.0, 0.25]])  # (B, T)
    xt = add_noise(x0, noise, t)
    assert torch.equal(xt[0, :, 0], x0[0, :, 0]) and torch.equal(xt[0, :, 1], noise[0, :, 1])
    t_pos = t[:, :, None, None].expand(2, 4, 5, 6)  # (B, T, H, W)
    torch.testing.assert_close(add_noise(x0, noise, t_pos), xt)
    audio = torch.randn(2, 8, 10)
    assert add_noise(audio, audio, torch.rand(2, 10)).shape == audio.shape
    with pytest.raises(ValueError, match="does not match"):
        expand_t(torch.rand(2, 5), x0)


def test_shift_monotone_with_fixed_points():
    t = torch.linspace(0, 1, 101)
    for shift in (0.5, 1.0, 3.0, 7.5):
        s = shift_timesteps(t, shift)
        assert (s[1:] > s[:-1]).all()
        assert s[0] == 0 and s[-1] == 1
    torch.testing.assert_close(shift_timesteps(t, 1.0), t)
    assert (shift_timesteps(t[1:-1], 3.0) > t[1:-1]).all()  # shift > 1 moves mass towards noise
    with pytest.raises(ValueError):
        shift_timesteps(t, 0.0)


def test_token_count_shift_rules():
    assert token_count_shift(256) == pytest.approx(math.exp(0.5))
    assert token_count_shift(4096) == pytest.approx(math.exp(1.15))
    assert token_count_shift(1024) < token_count_shift(2048) < token_count_shift(8192)
    # Open-Sora 2.0's linear rule: 256 tokens -> 1, 4096 -> 3.
    assert token_count_shift(256, base_shift=1.0, max_shift=3.0, exponential=False) == pytest.approx(1.0)
    assert token_count_shift(4096, base_shift=1.0, max_shift=3.0, exponential=False) == pytest.approx(3.0)


def test_logit_normal_statistics():
    g = torch.Generator().manual_seed(0)
    t = sample_logit_normal((200_000,), mean=0.5, std=0.8, generator=g)
    assert ((t > 0) & (t < 1)).all()
    logit = torch.log(t / (1 - t))
    assert logit.mean().item() == pytest.approx(0.5, abs=0.01)
    assert logit.std().item() == pytest.approx(0.8, abs=0.01)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sample_logit_normal(5, generator=g1), sample_logit_normal(5, generator=g2))


def _loss_inputs():
    g = torch.Generator().manual_seed(0)
    pred = {"video": torch.randn(2, 4, 3, 2, 2, generator=g), "audio": torch.randn(2, 2, 6, generator=g)}
    target = {k: torch.randn(v.shape, generator=g) for k, v in pred.items()}
    mask = {
        "video": torch.tensor([[False, True, True], [True, True, True]]),
        "audio": torch.tensor([[True] * 6, [False] * 6]),
    }
    return pred, target, mask


def test_loss_is_mse_over_generated_tokens_only():
    pred, target, mask = _loss_inputs()
    out = flow_loss(pred, target, mask, weights={"video": 1.0, "audio": 0.5})
    keep = mask["video"][:, None, :, None, None].expand_as(pred["video"])
    want_v = (pred["video"] - target["video"])[keep].square().mean()
    want_a = (pred["audio"][0] - target["audio"][0]).square().mean()
    torch.testing.assert_close(out["loss_video"], want_v)
    torch.testing.assert_close(out["loss_audio"], want_a)
    torch.testing.assert_close(out["loss"], want_v + 0.5 * want_a)
    assert out["tokens_audio"].item() == 2 * 6


def test_loss_ignores_masked_tokens_exactly():
    pred, target, mask = _loss_inputs()
    base = flow_loss(pred, target, mask)
    changed = {k: v.clone() for k, v in pred.items()}
    changed["video"][0, :, 0] = float("inf")  # a conditioning frame: even inf cannot leak
    changed["audio"][1] = 123.0  # a clip without audio
    out = flow_loss(changed, target, mask)
    for key in base:
        assert torch.equal(out[key], base[key]), key


def test_loss_with_no_generated_tokens_is_zero_not_nan():
    pred, target, mask = _loss_inputs()
    pred = {k: v.requires_grad_() for k, v in pred.items()}
    mask["audio"] = torch.zeros(2, 6, dtype=torch.bool)
    out = flow_loss(pred, target, mask)
    assert out["loss_audio"].item() == 0.0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.equal(pred["audio"].grad, torch.zeros_like(pred["audio"]))
    video_only = flow_loss({"video": pred["video"], "audio": None}, target, mask)
    assert "loss_audio" not in video_only


def _sample(mode, b=4, t_frames=5, l_frames=20, has_audio=None, **kwargs):
    has_audio = torch.ones(b, dtype=torch.bool) if has_audio is None else has_audio
    return ConditioningCurriculum({mode: 1.0}, caption_dropout=0.0).sample(
        torch.full((b,), 0.7),
        t_frames,
        l_frames,
        has_audio,
        video_frame_seconds=0.16,
        audio_frame_seconds=0.04,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


def test_curriculum_masks_per_mode():
    c = _sample("t2av")
    assert c.video_loss_mask.all() and c.audio_loss_mask.all() and (c.t_video == 0.7).all()
    c = _sample("i2v")
    assert (~c.video_loss_mask[:, 0]).all() and c.video_loss_mask[:, 1:].all() and c.audio_loss_mask.all()
    assert (c.t_video[:, 0] == 0).all() and (c.t_video[:, 1:] == 0.7).all()
    c = _sample("v2a")
    assert (~c.video_loss_mask).all() and (c.t_video == 0).all() and c.audio_loss_mask.all()
    c = _sample("a2v")
    assert c.video_loss_mask.all() and (~c.audio_loss_mask).all() and (c.t_audio == 0).all()
    assert [MODES[i] for i in c.mode.tolist()] == ["a2v"] * 4


def test_curriculum_extend_prefix_covers_same_seconds_of_audio():
    c = _sample("extend", b=64)
    prefix = (~c.video_loss_mask).sum(1)  # (B,)
    assert ((prefix >= 1) & (prefix <= 4)).all() and len(prefix.unique()) > 1
    # The clean frames are a prefix; k clean latents hold 4 (k - 1) + 1 pixel frames = (4 (k - 1) + 1) / 25 s,
    # which is 4 k - 3 audio latents of 1/25 s: those are clean too.
    for i in range(64):
        k = prefix[i].item()
        assert (~c.video_loss_mask[i, :k]).all() and c.video_loss_mask[i, k:].all()
        assert (~c.audio_loss_mask[i, : 4 * k - 3]).all() and c.audio_loss_mask[i, 4 * k - 3 :].all()
    assert torch.equal(c.t_video == 0, ~c.video_loss_mask)


def test_curriculum_clips_without_audio():
    has_audio = torch.tensor([True, False] * 50)
    curriculum = ConditioningCurriculum({"t2av": 1, "v2a": 1, "a2v": 1})
    c = curriculum.sample(torch.rand(100), 3, 12, has_audio, generator=torch.Generator().manual_seed(0))
    assert (~c.audio_loss_mask[~has_audio]).all()
    no_audio_modes = {MODES[i] for i in c.mode[~has_audio].tolist()}
    assert no_audio_modes == {"t2av"}
    assert {MODES[i] for i in c.mode[has_audio].tolist()} == {"t2av", "v2a", "a2v"}


def test_caption_dropout_rate_and_errors():
    c = ConditioningCurriculum(caption_dropout=0.1).sample(
        torch.rand(20_000),
        2,
        4,
        torch.ones(20_000, dtype=torch.bool),
        generator=torch.Generator().manual_seed(0),
    )
    assert c.drop_text.dtype == torch.bool and c.drop_text.float().mean().item() == pytest.approx(
        0.1, abs=0.01
    )
    with pytest.raises(ValueError, match="unknown"):
        ConditioningCurriculum({"v2v": 1.0})
    with pytest.raises(ValueError, match="caption_dropout"):
        ConditioningCurriculum(caption_dropout=1.5)
