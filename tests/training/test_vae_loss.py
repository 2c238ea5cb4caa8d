"""Where the VAE losses live: sora/training/vae_loss.py (the discriminator network in sora/models/), with the
checkpoint keys they had before the move (loss behaviour: tests/models/test_{video,audio}_vae.py)."""

import pytest
import torch

from sora.models.discriminator import PatchDiscriminator3D
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
