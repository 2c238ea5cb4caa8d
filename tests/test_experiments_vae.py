"""Every VAE experiment, composed from the real configs and shrunk to CPU size, runs one training step through
train.run: validation with reconstructions, the latent statistics in last.ckpt, a checkpoint that rebuilds."""

from pathlib import Path

import pytest
import torch

from sora.checkpoint import load_network_from_checkpoint
from sora.config import CONF_DIR, compose

VAE_EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("vae_*.yaml"))
# Shrink the networks (same topology: 8x spatial / 4x temporal video, 25 Hz audio) to a few thousand weights.
SHRINK = {
    "video": [
        "model.vae.base_channels=4",
        "model.vae.channel_mult=[1,2,2]",
        "model.vae.num_res_blocks=1",
        "model.vae.patch_size=2",
        "model.vae.latent_channels=4",
    ],
    "audio": ["model.vae.base_channels=8", "model.vae.channel_mult=[1,1,1]", "model.vae.num_res_blocks=1"],
}


def test_there_are_vae_experiments():
    assert {"vae_video_tiny", "vae_audio_tiny", "vae_video_base", "vae_audio_base"} <= set(VAE_EXPERIMENTS)


@pytest.mark.parametrize("experiment", VAE_EXPERIMENTS)
def test_vae_experiment_one_step(experiment, world_shards, tmp_path):
    import train

    kind = "audio" if "audio" in experiment else "video"
    overrides = [
        f"experiment={experiment}",
        "trainer=cpu",
        "trainer.max_steps=1",
        "logger=csv",
        f"out_dir={tmp_path}",
        f"data.train_urls={world_shards}/shard-*.tar",
        f"data.val_urls={world_shards}/shard-000001.tar",
        "data.val_samples=2",
        "data.num_workers=0",
        "data.shuffle_buffer=0",
        "data.pin_memory=false",
        "~data.buckets",
        "+data.buckets={64px: {17: [1.0, 2]}}",
        "trainer.val_check_interval=1",
        "module.num_recon_clips=1",
        "callbacks.latent_stats.num_batches=1",
        *SHRINK[kind],
    ]
    if compose("train", [f"experiment={experiment}"]).module.get("loss", {}).get("disc_weight", 0) > 0:
        overrides += ["module.loss.disc_base_channels=4", "module.loss.disc_num_layers=2"]
    cfg = compose("train", overrides)
    result = train.run(cfg)

    assert result["global_step"] == 1
    assert ("val/psnr" if kind == "video" else "val/mel_l1") in result["metrics"]
    assert list((tmp_path / "recon" / "step000001").glob("*.mp4")), "validation reconstructions were written"
    vae, config = load_network_from_checkpoint(result["checkpoint"], "vae")
    assert config["_target_"] == cfg.model.vae._target_
    assert not torch.equal(vae.latent_std, torch.ones_like(vae.latent_std)), "latent stats are in last.ckpt"
    assert Path(tmp_path / "config.yaml").is_file()


def test_gan_experiment_uses_manual_optimization():
    from hydra.utils import instantiate

    cfg = compose(
        "train",
        [
            "experiment=vae_video_base",
            *SHRINK["video"],
            "module.loss.disc_base_channels=4",
            "module.loss.disc_num_layers=2",
        ],
    )
    module = instantiate(cfg.module, _recursive_=False)
    assert not module.automatic_optimization and cfg.trainer.gradient_clip_val is None
    assert module.hparams.grad_clip > 0


@pytest.mark.slow
def test_tiny_video_vae_learns_on_held_out_clips(world_shards, tmp_path_factory, tmp_path):
    """A couple of minutes of the real vae_video_tiny experiment: held-out PSNR rises well above untrained."""
    import lightning as L
    from hydra.utils import instantiate

    import train
    from data_pipelines.synthetic import WorldConfig, write_shards

    held_out = tmp_path_factory.mktemp("held_out")
    write_shards(WorldConfig(duration=1.0), held_out, num_clips=8, seed=7, clips_per_shard=8, num_workers=1)
    cfg = compose(
        "train",
        [
            "experiment=vae_video_tiny",
            "trainer.max_steps=150",
            "logger=csv",
            f"out_dir={tmp_path}",
            f"data.train_urls={world_shards}/shard-*.tar",
            f"data.val_urls={held_out}/shard-000000.tar",
            "data.val_samples=8",
            "data.num_workers=0",
            "callbacks.latent_stats.num_batches=1",
        ],
    )
    L.seed_everything(cfg.seed)
    untrained = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    before = untrained.validate(
        instantiate(cfg.module, _recursive_=False), instantiate(cfg.data), verbose=False
    )[0]["val/psnr"]
    after = train.run(cfg)["metrics"]["val/psnr"]
    assert after > before + 6, (before, after)
