"""ODE sampler: exact on an analytic flow, Heun second order on a curved one, conditions held clean at
t=0, remix, guidance arithmetic."""

import pytest
import torch

from sora.diffusion.flow import add_noise
from sora.diffusion.sampler import Condition, Window, guided, rolling_windows, sample, sigma_schedule


def _exact_denoiser(x0_video, x0_audio, calls=None):
    """For data concentrated on one point x0, the rectified-flow velocity is (x_t - x0) / t."""

    def denoise(xv, xa, tv, ta):
        if calls is not None:
            calls.append((tv.clone(), None if ta is None else ta.clone()))
        tv_ = tv.clamp_min(1e-6)[:, None, :, None, None]
        vv = (xv - x0_video) / tv_
        va = None if xa is None else (xa - x0_audio) / ta.clamp_min(1e-6)[:, None, :]
        return vv, va

    return denoise


@pytest.mark.parametrize("solver,steps", [("euler", 1), ("euler", 7), ("heun", 4)])
def test_lands_exactly_on_the_data_point(solver, steps):
    x0v, x0a = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 3, 6)
    v, a = sample(
        _exact_denoiser(x0v, x0a),
        torch.randn_like(x0v),
        torch.randn_like(x0a),
        sigma_schedule(steps, shift=3.0),
        solver=solver,
    )
    torch.testing.assert_close(v, x0v, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a, x0a, atol=1e-4, rtol=1e-4)


MIXTURE_MEANS, MIXTURE_STD = (-1.5, 1.5), 0.2


def _mixture_velocity(x, t):
    """Exact rectified-flow velocity ``E[noise - x0 | x_t]`` for data from an equal two-Gaussian mixture.

    Given component k (mean m, std s): ``x_t ~ N((1 - t) m, (1 - t)^2 s^2 + t^2)`` and
    ``E[noise - x0 | x_t, k] = -m + (t - (1 - t) s^2) / var * (x_t - (1 - t) m)``; the posterior over k
    weighs the components. The flow bends where the two modes separate, so Euler is not exact.
    """
    s2 = MIXTURE_STD**2
    var = (1 - t) ** 2 * s2 + t**2
    logits, velocities = [], []
    for m in MIXTURE_MEANS:
        r = x - (1 - t) * m
        logits.append(-0.5 * r**2 / var)
        velocities.append(-m + (t - (1 - t) * s2) / var * r)
    weights = torch.softmax(torch.stack(logits), 0)
    return (weights * torch.stack(velocities)).sum(0)


def _mixture_denoiser(xv, xa, tv, ta):
    return (
        _mixture_velocity(xv, tv.to(xv.dtype)[:, None, :, None, None]),
        _mixture_velocity(xa, ta.to(xa.dtype)[:, None, :]),
    )


def test_heun_is_second_order_on_a_curved_flow():
    g = torch.Generator().manual_seed(0)
    noise_v = torch.randn(4, 2, 3, 4, 4, generator=g, dtype=torch.float64)
    noise_a = torch.randn(4, 2, 6, generator=g, dtype=torch.float64)
    ref_v, ref_a = sample(_mixture_denoiser, noise_v, noise_a, sigma_schedule(256), solver="heun")

    def error(steps, solver):
        v, a = sample(_mixture_denoiser, noise_v, noise_a, sigma_schedule(steps), solver=solver)
        return float(torch.cat([(v - ref_v).abs().flatten(), (a - ref_a).abs().flatten()]).mean())

    euler8, euler16, heun8, heun16 = (
        error(8, "euler"),
        error(16, "euler"),
        error(8, "heun"),
        error(16, "heun"),
    )
    # measured: euler 0.062 -> 0.032 (first order), heun 0.023 -> 0.0056 (second order)
    assert euler16 > 0.02, "the flow is curved: Euler is not exact"
    assert heun16 < euler16 / 4, (heun16, euler16)
    assert heun8 / heun16 > 3.0 and euler8 / euler16 < 2.5, (heun8, heun16, euler8, euler16)


def test_schedule_shape_shift_and_errors():
    s = sigma_schedule(10, shift=3.0)
    assert s.shape == (11,) and s[0] == 1 and s[-1] == 0 and bool((s[:-1] > s[1:]).all())
    assert bool((s[1:-1] > sigma_schedule(10)[1:-1]).all()), "shift > 1 spends more steps at high noise"
    assert sigma_schedule(4, start=0.5)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_steps"):
        sigma_schedule(0)
    with pytest.raises(ValueError, match="strength"):
        sigma_schedule(4, start=0.0)


def test_conditioned_frames_stay_clean_and_see_t_zero():
    x0v, x0a = torch.randn(1, 4, 5, 4, 4), torch.randn(1, 3, 8)
    clean_v = torch.randn_like(x0v)  # what the user gave (e.g. the encoded first frame)
    vmask = torch.tensor([[True, True, False, False, False]])
    amask = torch.ones(1, 8, dtype=torch.bool)  # audio fully given: audio-to-video
    calls = []
    v, a = sample(
        _exact_denoiser(x0v, x0a, calls),
        torch.randn_like(x0v),
        torch.randn_like(x0a),
        sigma_schedule(5),
        video_cond=Condition(clean_v, vmask),
        audio_cond=Condition(x0a * 2, amask),
    )
    torch.testing.assert_close(v[:, :, :2], clean_v[:, :, :2])
    torch.testing.assert_close(a, x0a * 2)
    for tv, ta in calls:
        assert bool((tv[:, :2] == 0).all()) and bool((tv[:, 2:] > 0).all()) and bool((ta == 0).all())
    with pytest.raises(ValueError, match="mask"):
        Condition(clean_v, vmask.float())


def test_remix_starts_from_the_noised_source():
    source = torch.randn(1, 4, 3, 4, 4)
    sigmas = sigma_schedule(6, start=0.3)
    start = add_noise(source, torch.randn_like(source), torch.tensor([0.3]))
    v, _ = sample(_exact_denoiser(source, None), start, None, sigmas)
    torch.testing.assert_close(v, source, atol=1e-4, rtol=1e-4)


def test_guidance_combines_with_separate_scales_and_batches():
    calls = []

    def model(xv, xa, tv, ta, drop):
        calls.append(len(drop))
        d = drop.float()
        return (1 - d)[:, None, None, None, None] * 3.0 + d[:, None, None, None, None], (1 - d)[
            :, None, None
        ] * 5.0

    xv, xa = torch.zeros(2, 1, 1, 1, 1), torch.zeros(2, 1, 1)
    tv, ta = torch.ones(2, 1), torch.ones(2, 1)
    v, a = guided(model, video_scale=2.0, audio_scale=1.5)(xv, xa, tv, ta)
    assert torch.allclose(v, torch.full_like(v, 1 + 2 * (3 - 1))) and torch.allclose(
        a, torch.full_like(a, 7.5)
    )
    assert calls == [4]
    v2, a2 = guided(model, video_scale=2.0, audio_scale=1.5, batch_cfg=False)(xv, xa, tv, ta)
    assert torch.equal(v, v2) and torch.equal(a, a2) and calls == [4, 2, 2]
    guided(model, video_scale=1.0, audio_scale=1.0)(xv, xa, tv, ta)
    assert calls[-1] == 2, "no unconditional pass when guidance is off"


def test_rolling_windows_by_hand():
    # a 2-latent source, 10 new latents, windows of 5 keeping 2: 3 new per window, the last one shorter
    assert rolling_windows(2, 10, 5, 2) == [
        Window(0, 2, 3),
        Window(3, 2, 3),
        Window(6, 2, 3),
        Window(9, 2, 1),
    ]
    # text-to-video start: the first window has no context and fills the whole window
    assert rolling_windows(0, 9, 5, 2) == [Window(0, 0, 5), Window(3, 2, 3), Window(6, 2, 1)]
    # a 1-latent source (an image) is all context; nothing to add gives no window
    assert rolling_windows(1, 4, 5, 3) == [Window(0, 1, 4)]
    assert rolling_windows(7, 0, 5, 2) == []


@pytest.mark.parametrize("existing", [0, 1, 2, 6])
@pytest.mark.parametrize("window,context", [(5, 2), (5, 4), (3, 1), (9, 4)])
@pytest.mark.parametrize("new", [1, 3, 7, 24])
def test_rolling_windows_count_and_coverage(existing, window, context, new):
    windows = rolling_windows(existing, new, window, context)
    first = window - min(context, existing)
    assert len(windows) == 1 + max(0, -(-(new - first) // (window - context)))
    n = existing
    for w in windows:
        # each window starts where its context (the last frames that exist) starts and fits the model's window
        assert (w.start + w.context, w.context, w.length <= window) == (n, min(context, n), True)
        n += w.new
    assert n == existing + new and all(w.new > 0 for w in windows)


@pytest.mark.parametrize(
    "args,match",
    [
        ((2, 4, 5, 5), "= \\[1, 4\\] latent frames, got 5"),
        ((2, 4, 5, 0), "context"),
        ((2, 4, 1, 1), "at least 2"),
    ],
)
def test_rolling_windows_bad_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        rolling_windows(*args)
