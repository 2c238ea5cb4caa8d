"""Where the VAE losses live: sora/training/vae_loss.py (the discriminator network in sora/models/), with the
checkpoint keys they had before the move (loss behaviour: tests/models/test_{video,audio}_vae.py)."""

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
