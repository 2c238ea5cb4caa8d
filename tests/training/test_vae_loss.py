"""Where the VAE losses live: sora/training/vae_loss.py (the discriminator network in sora/models/), with the
checkpoint keys they had before the move (loss behaviour: tests/models/test_{video,audio}_vae.py)."""

import pytest
import torch

from sora.models.discriminator import PatchDiscriminator3D
from sora.models.distributions import DiagonalGaussian
from sora.training.vae_loss import VideoVAELoss
from sora.training.vae_module import VideoVAEModule

VIDEO = {
    "_target_": "sora.models.video_vae.CausalVideoVAE",
    "latent_channels": 4,
    "base_channels": 8,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "patch_size": 2,
}


def test_gan_checkpoint_keys_are_unchanged():
    module = VideoVAEModule(
        vae=VIDEO, loss={"disc_weight": 0.5, "disc_base_channels": 8, "disc_num_layers": 2}
    )
    assert isinstance(module.loss, VideoVAELoss) and isinstance(
        module.loss.discriminator, PatchDiscriminator3D
    )
    disc_keys = sorted(k for k in module.state_dict() if k.startswith("loss."))
    # the layout of checkpoints written before the loss left sora/models/video_vae.py
    assert disc_keys == [
        f"loss.discriminator.net.{i}.{p}" for i in (0, 2, 3, 5, 6, 8) for p in ("bias", "weight")
    ]
    fresh = VideoVAEModule(
        vae=VIDEO, loss={"disc_weight": 0.5, "disc_base_channels": 8, "disc_num_layers": 2}
    )
    fresh.load_state_dict(module.state_dict())  # strict
    for k in disc_keys:
        assert torch.equal(fresh.state_dict()[k], module.state_dict()[k])


def test_models_hold_no_losses():
    import sora.models.audio_vae as audio_vae
    import sora.models.video_vae as video_vae

    assert not hasattr(video_vae, "VideoVAELoss") and not hasattr(video_vae, "_load_lpips")
    assert not hasattr(audio_vae, "AudioVAELoss")


def _posterior(b: int):
    from sora.models.distributions import DiagonalGaussian

    return DiagonalGaussian.from_moments(torch.zeros(b, 4, 10))


def test_audio_loss_linear_term_makes_a_flattened_impact_cost_more():
    # An impact is a few loud mel bins over a quiet floor. Lowering the loud bins by 1 nat (the decoded
    # sound ~9 dB quieter) or the quiet ones by the same total amount is the same L1 on log-mel: the VAE
    # trained on L1 alone flattened the peaks and its sound came out 7.8 dB quiet. Spectral convergence on
    # the linear magnitude charges the loud bins' error by their energy.
    from sora.training.vae_loss import AudioVAELoss

    target = torch.full((1, 8, 20), -6.0)
    target[:, 2:4, 5:7] = 2.0  # the impact: 4 loud bins
    flattened = target.clone()
    flattened[:, 2:4, 5:7] -= 1.0
    floor_error = target.clone()
    floor_error[:, 0, :4] -= 1.0  # 4 quiet bins, the same L1
    l1_only, with_linear = AudioVAELoss(), AudioVAELoss(linear_weight=1.0)
    post = _posterior(1)
    a, b = l1_only(flattened, target, post)[0], l1_only(floor_error, target, post)[0]
    assert torch.isclose(a, b, rtol=1e-6)
    a, b = with_linear(flattened, target, post)[0], with_linear(floor_error, target, post)[0]
    assert a > b + 0.3
    logs = with_linear(flattened, target, post)[1]
    assert 0.5 < float(logs["spectral_convergence"]) < 0.7  # 1 - e^-1 of nearly all the energy
    with pytest.raises(ValueError, match="linear_weight"):
        AudioVAELoss(linear_weight=-1.0)


def test_window_log_power_is_the_log_of_each_windows_summed_power():
    from sora.training.vae_loss import window_log_power

    log_mel = torch.randn(2, 4, 10)
    got = window_log_power(log_mel, 4)  # windows of frames 0-3, 4-7 and 8-9 (padded with no power)
    power = log_mel.double().mul(2).exp()
    want = torch.stack([power[..., a:b].sum(dim=(1, 2)).log() for a, b in ((0, 4), (4, 8), (8, 10))], dim=1)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_audio_loss_energy_term_is_the_loudness_error_per_window():
    """An impact 1 nat quieter is 2 nats of power in its window: the energy term charges exactly that, an
    error on the quiet floor of the same log-mel L1 almost nothing."""
    from sora.training.vae_loss import AudioVAELoss

    target = torch.full((1, 8, 32), -6.0)
    target[:, 2:4, 5:7] = 2.0  # the impact, in the first 16-frame window
    flattened = target.clone()
    flattened[:, 2:4, 5:7] -= 1.0
    floor_error = target.clone()
    floor_error[:, 0, 20:24] -= 1.0  # 4 quiet bins in the second window, the same L1
    loss = AudioVAELoss(energy_weight=1.0, energy_window=16)
    post = _posterior(1)
    flat_logs, floor_logs = loss(flattened, target, post)[1], loss(floor_error, target, post)[1]
    # window 1 lost ~2 nats of power (its power is nearly all the impact's), window 2 none: mean over 2
    assert float(flat_logs["energy"]) == pytest.approx(1.0, abs=0.01)
    assert float(floor_logs["energy"]) < 0.05
    with pytest.raises(ValueError, match="energy_weight"):
        AudioVAELoss(energy_weight=-1.0)


def _frame_with_object() -> torch.Tensor:
    """(1, 3, 2, 16, 16): a dark backdrop with a 3x3 red square."""
    video = torch.full((1, 3, 2, 16, 16), -0.8)
    video[:, 0, :, 5:8, 5:8] = 0.9
    return video


def test_foreground_mask_marks_what_differs_from_the_backdrop():
    from sora.training.vae_loss import foreground_mask

    m = foreground_mask(_frame_with_object(), threshold=0.3)
    assert m.shape == (1, 1, 2, 16, 16)
    assert m[..., 5:8, 5:8].eq(1).all() and m.sum() == 2 * 9
    faint = torch.full((1, 3, 1, 8, 8), 0.0)
    faint[:, :, :, 0, 0] = 0.05  # 0.15 from the backdrop over three channels: half of the threshold
    assert foreground_mask(faint, threshold=0.3)[0, 0, 0, 0, 0] == pytest.approx(0.5)


def test_foreground_weight_makes_an_object_error_cost_more_than_a_backdrop_error():
    """The same error on the 9 object pixels and on 9 backdrop pixels: equal under the plain mean, the
    object's error costs (1 + w) times more with foreground_weight w."""
    video = _frame_with_object()
    posterior = DiagonalGaussian(torch.zeros(1, 8, 1, 2, 2), torch.zeros(1, 8, 1, 2, 2))
    on_object, on_backdrop = video.clone(), video.clone()
    on_object[:, 1, :, 5:8, 5:8] += 0.5  # the red square drawn orange
    on_backdrop[:, 1, :, 10:13, 10:13] += 0.5
    for weight, ratio in ((0.0, 1.0), (20.0, 21.0)):
        loss = VideoVAELoss(recon_loss="l1", kl_weight=0.0, foreground_weight=weight)
        obj, _ = loss(video, on_object, posterior)
        back, _ = loss(video, on_backdrop, posterior)
        assert (obj / back).item() == pytest.approx(ratio, rel=1e-5)
    with pytest.raises(ValueError, match="foreground_weight"):
        VideoVAELoss(foreground_weight=-1.0)
