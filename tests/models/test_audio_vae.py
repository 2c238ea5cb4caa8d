"""AudioVAE: framing and shapes, Griffin-Lim vocoder, masked loss, gradients, save/load, configs."""

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sora.models.audio_vae import AudioVAE, GriffinLimVocoder, ResBlock1d, Vocoder
from sora.training.vae_loss import AudioVAELoss

CONF = Path(__file__).resolve().parents[2] / "conf" / "model" / "vae"
SMALL = dict(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1)


def make_vae(**overrides) -> AudioVAE:
    """Residual branches made live (a fresh VAE zero-initialises their second conv)."""
    torch.manual_seed(0)
    m = AudioVAE(**{**SMALL, **overrides}).eval()
    for block in m.modules():
        if isinstance(block, ResBlock1d):
            block.conv2.reset_parameters()
    return m


@pytest.fixture(scope="module")
def vae() -> AudioVAE:
    return make_vae()


def noise(samples: int, b: int = 2) -> torch.Tensor:
    return (torch.rand(b, 1, samples, generator=torch.Generator().manual_seed(samples)) * 2 - 1) * 0.5


def tone(freq: float, seconds: float = 1.0, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t)).view(1, 1, -1)


def test_contract_attributes(vae):
    assert (vae.sample_rate, vae.hop_length, vae.n_fft, vae.n_mels) == (16000, 160, 1024, 64)
    assert (vae.latent_rate, vae.latent_channels, vae.temporal_compression) == (25, 8, 4)
    assert isinstance(vae.vocoder, Vocoder)


@pytest.mark.parametrize("samples", [1, 639, 640, 641, 16000, 16001, 24000])
def test_shapes(vae, samples):
    x = noise(samples)
    latents = math.ceil(samples * 25 / 16000)
    assert vae.latent_length(samples) == latents
    assert vae.log_mel(x).shape == (2, 64, samples // 160)
    with torch.no_grad():
        post = vae.encode(x)
        assert post.mean.shape == post.logvar.shape == (2, 8, latents)
        assert vae.decode(post.mean).shape == (2, 64, 4 * latents)
        recon, target, posterior = vae(x)
    assert recon.shape == target.shape == (2, 64, 4 * latents)
    torch.testing.assert_close(target[..., : samples // 160], vae.log_mel(x))  # padding only appends frames


def test_bad_shapes_raise_clear_errors(vae):
    with pytest.raises(ValueError, match=r"mono \(B, 1, S\).*got \(2, 2, 100\)"):
        vae.encode(torch.zeros(2, 2, 100))
    with pytest.raises(ValueError, match=r"got \(100,\)"):
        vae.log_mel(torch.zeros(100))
    with pytest.raises(ValueError, match=r"\(B, 8, L\), got \(1, 4, 5\)"):
        vae.decode(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        vae.latent_length(0)
    with pytest.raises(ValueError, match="power of two"):
        AudioVAE(**SMALL, latent_rate=30)
    with pytest.raises(ValueError, match=r"\(B, 64, F\)"):
        vae.vocoder(torch.zeros(1, 80, 10))


def test_silence_is_finite(vae):
    silent = torch.zeros(1, 1, 3200)
    mel = vae.log_mel(silent)
    assert torch.allclose(mel, torch.full_like(mel, math.log(1e-5)))
    with torch.no_grad():
        recon, _, _ = vae(silent)
    assert torch.isfinite(recon).all()


def test_vocoder_output_length_and_range():
    vae = make_vae(vocoder=GriffinLimVocoder(n_iter=2, nnls_iters=2))  # lengths only: a cheap vocoder
    with torch.no_grad():
        z = vae.encode(noise(3201, b=1)).mean  # 6 latents
        wav = vae.decode_audio(z)
        assert wav.shape == (1, 1, 6 * 640)
        assert vae.decode_audio(z, num_samples=3201).shape == (1, 1, 3201)
        assert vae.decode_audio(z, num_samples=5000).shape == (1, 1, 5000)
    assert float(wav.abs().max()) <= 1.0
    assert GriffinLimVocoder(n_iter=2)(torch.zeros(2, 64, 37)).shape == (2, 1, 37 * 160)


def test_pure_tones_keep_their_frequency(vae):
    freqs = [440.0, 1000.0]
    tones = torch.cat([tone(f, seconds=0.5) for f in freqs])  # (2, 1, 8000)
    wav = vae.vocoder(vae.log_mel(tones))
    assert wav.shape == (2, 1, 8000)
    stft_bin_hz = 16000 / 1024
    for i, freq in enumerate(freqs):
        spectrum = torch.fft.rfft(wav[i, 0] * torch.hann_window(wav.shape[-1])).abs()
        peak_hz = float(spectrum.argmax()) * 16000 / wav.shape[-1]
        assert abs(peak_hz - freq) <= 2 * stft_bin_hz, (freq, peak_hz)  # within two STFT bins
        assert float(wav[i].abs().max()) > 0.1  # not silence


def test_loss_masks_clips_without_sound(vae):
    x = noise(3200, b=3)
    x[1] = 0.0  # a clip without sound
    has_audio = torch.tensor([True, False, True])
    recon, target, post = vae(x, generator=torch.Generator().manual_seed(0))
    loss_fn = AudioVAELoss(kl_weight=1e-3)
    loss, logs = loss_fn(recon, target, post, has_audio)
    rec = (recon - target).abs().mean(dim=(1, 2))
    kl = post.kl() / target[0].numel()
    expected = ((rec + 1e-3 * kl)[has_audio]).mean()
    torch.testing.assert_close(loss, expected)
    # the masked clip has no influence, even if its prediction is garbage
    garbage = recon.detach().clone()
    garbage[1] = 1e4
    loss2, _ = loss_fn(garbage, target, post, has_audio)
    torch.testing.assert_close(loss2.detach(), loss_fn(recon.detach(), target, post, has_audio)[0].detach())
    assert float(logs["audio_fraction"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"has_audio must have shape \(3,\)"):
        loss_fn(recon, target, post, torch.tensor([True]))


def test_all_silent_batch_gives_finite_zero_loss():
    m = make_vae().train()
    x = torch.zeros(2, 1, 1280)
    recon, target, post = m(x)
    loss, logs = AudioVAELoss()(recon, target, post, torch.tensor([False, False]))
    assert float(loss.detach()) == 0.0 and all(torch.isfinite(v) for v in logs.values())
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())


def test_gradients_are_finite_and_reach_every_parameter():
    m = make_vae().train()
    recon, target, post = m(noise(3200))
    loss, _ = AudioVAELoss(kl_weight=1e-3)(recon, target, post)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0, name


def test_state_dict_round_trip_latent_stats_and_determinism(vae):
    vae.set_latent_stats(torch.linspace(-1, 1, 8), torch.linspace(0.5, 2, 8))
    try:
        other = AudioVAE(**SMALL).eval()
        other.load_state_dict(vae.state_dict())
        assert not any(k.startswith("vocoder.") for k in vae.state_dict())  # Griffin-Lim has no weights
        x = noise(4000)
        with torch.no_grad():
            z = vae.normalize_latents(vae.encode(x).mean)
            torch.testing.assert_close(other.normalize_latents(other.encode(x).mean), z, atol=0, rtol=0)
            torch.testing.assert_close(vae.denormalize_latents(z), vae.encode(x).mean)
            a = vae(x, generator=torch.Generator().manual_seed(1))[0]
            b = other(x, generator=torch.Generator().manual_seed(1))[0]
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    finally:
        vae.set_latent_stats(torch.zeros(8), torch.ones(8))


def test_bf16_autocast_runs(vae):
    x = noise(3200)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        recon, target, post = vae(x, sample_posterior=False)
        wav = vae.decode_audio(post.mean, 3200)
    assert recon.dtype == torch.bfloat16 and target.dtype == torch.float32
    assert torch.isfinite(recon.float()).all() and wav.shape == (2, 1, 3200)


@pytest.mark.parametrize("name", ["audio_tiny", "audio_base"])
def test_configs_instantiate(name):
    m = instantiate(OmegaConf.load(CONF / f"{name}.yaml")).eval()
    assert isinstance(m, AudioVAE) and (m.latent_rate, m.latent_channels, m.n_mels) == (25, 8, 64)
    with torch.no_grad():
        assert m.encode(noise(16000, b=1)).mean.shape == (1, 8, 25)


def test_fresh_blocks_are_identity_and_shortcuts_are_optional():
    fresh = AudioVAE(**SMALL)
    block = next(
        b for b in fresh.modules() if isinstance(b, ResBlock1d) and isinstance(b.skip, torch.nn.Identity)
    )
    x = torch.randn(2, block.conv1.in_channels, 12)
    torch.testing.assert_close(block(x), x)
    assert fresh.encoder[-1].shortcut is not None and fresh.decoder[-1].shortcut is not None
    plain = AudioVAE(**SMALL, shortcut=False)
    assert plain.encoder[-1].shortcut is None and plain.decoder[-1].shortcut is None
    recon, target, post = plain(noise(3200))
    assert recon.shape == target.shape and post.mean.shape == (2, 8, 5)
