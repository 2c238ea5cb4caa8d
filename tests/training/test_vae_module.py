"""VAE LightningModules: losses, masking of silent clips, the GAN path, latent statistics, checkpoints."""

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from sora.checkpoint import load_network_from_checkpoint, load_torch_checkpoint
from sora.training.ema import EMA
from sora.training.vae_module import AudioVAEModule, LatentStats, VideoVAEModule, spectral_convergence

VIDEO = {
    "_target_": "sora.models.video_vae.CausalVideoVAE",
    "latent_channels": 4,
    "base_channels": 8,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "patch_size": 2,
}
AUDIO = {
    "_target_": "sora.models.audio_vae.AudioVAE",
    "latent_channels": 4,
    "base_channels": 8,
    "channel_mult": [1, 1, 1],
    "num_res_blocks": 1,
}
OPTIM = {"lr": 1e-3, "warmup_steps": 0, "total_steps": 10}
SR = 16000


def _video_batch(b: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.rand(b, 3, 5, 32, 32, generator=g) * 2 - 1,
        "fps": torch.full((b,), 24.0),
        "caption": ["a ball"] * b,
    }


def _audio_batch(has_audio=(True, False), seed: int = 0, samples: int = 3200) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = len(has_audio)
    t = torch.arange(samples) / SR
    tone = 0.5 * torch.sin(2 * torch.pi * (300 + 400 * torch.rand(b, 1, 1, generator=g)) * t)  # (B, 1, S)
    audio = tone * torch.tensor(has_audio, dtype=torch.float32).view(b, 1, 1)  # silent clips are zeros
    return {
        "audio": audio,
        "has_audio": torch.tensor(has_audio),
        "video": torch.zeros(b, 3, 5, 32, 32),
        "fps": torch.full((b,), 24.0),
        "caption": ["a ball"] * b,
    }


def _trainer(tmp_path, max_steps: int, callbacks=(), **kw) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        **kw,
    )


def test_video_loss_ema_module_and_plain_hparams():
    module = VideoVAEModule(vae=VIDEO, optim=OPTIM)
    loss, logs = module.compute_loss(_video_batch())
    assert torch.isfinite(loss) and {"rec", "kl", "loss"} <= set(logs)
    assert module.automatic_optimization
    ema_keys = set(module.ema_module().state_dict())
    assert ema_keys and ema_keys <= set(module.state_dict()) and all(k.startswith("vae.") for k in ema_keys)
    assert module.hparams.vae == VIDEO and type(module.hparams.vae) is dict


def test_perceptual_loss_needs_local_weights():
    with pytest.raises(ValueError, match="lpips_weights_path"):
        VideoVAEModule(vae=VIDEO, loss={"perceptual_weight": 0.1})


def test_audio_clips_without_sound_are_masked_out():
    module = AudioVAEModule(vae=AUDIO, optim=OPTIM)
    torch.manual_seed(0)
    batch = _audio_batch((True, False))
    loss, logs = module.compute_loss(batch)
    # whatever the silent clip holds, the loss is the loss of the clip with sound alone (posterior sampled
    # with the same noise: the masked clip is encoded anyway, shapes stay static)
    noisy = {**batch, "audio": batch["audio"].clone()}
    noisy["audio"][1] = torch.randn(1, 3200).clamp(-1, 1)
    torch.manual_seed(0)
    loss_noisy, _ = module.compute_loss(noisy)
    assert torch.allclose(loss, loss_noisy)
    # and no gradient flows from it
    audio = noisy["audio"].requires_grad_()
    module.compute_loss(noisy)[0].backward()
    assert audio.grad[1].abs().max() == 0 and audio.grad[0].abs().max() > 0
    assert float(logs["audio_fraction"]) == 0.5
    # a batch with no sound at all: zero loss that still backpropagates
    silent, _ = module.compute_loss(_audio_batch((False, False)))
    silent.backward()
    assert float(silent) == 0.0
    # metrics and latent statistics only see clips with sound
    module.eval()
    with torch.no_grad():
        metrics, items = module.evaluate(batch)
        assert {k: v.numel() for k, v in metrics.items()} == dict.fromkeys(
            ("vae_mel_l1", "spectral_convergence", "mel_l1", "mel_l1_vocoder"), 1
        )
        assert len(items) == 1 and module.evaluate(_audio_batch((False, False))) == ({}, [])
        assert module.latent_means(module.vae, batch).shape[0] == 1
        assert module.latent_means(module.vae, _audio_batch((False, False))) is None


def test_spectral_convergence_separates_good_from_bad():
    ref = torch.rand(2, 64, 50) + 0.1
    assert spectral_convergence(ref, ref).abs().max() < 1e-6
    assert torch.allclose(spectral_convergence(torch.zeros_like(ref), ref), torch.ones(2))
    assert (spectral_convergence(ref * 1.05, ref) < spectral_convergence(ref * 1.5, ref)).all()


def test_gan_path_manual_optimization_steps_both_optimizers(tmp_path):
    module = VideoVAEModule(
        vae=VIDEO,
        optim=OPTIM,
        grad_clip=1.0,
        loss={"disc_weight": 0.5, "disc_start_step": 0, "disc_base_channels": 8, "disc_num_layers": 2},
    )
    assert not module.automatic_optimization
    vae0 = copy.deepcopy(module.vae.state_dict())
    disc0 = copy.deepcopy(module.loss.discriminator.state_dict())
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(module, DataLoader([_video_batch(seed=i) for i in range(4)], batch_size=None))
    assert trainer.global_step == 2  # autoencoder steps only: the discriminator's steps are not counted
    changed = lambda before, net: any(not torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert changed(vae0, module.vae) and changed(disc0, module.loss.discriminator)
    opt_g, opt_d = trainer.optimizers
    assert all(s["step"] == 2 for opt in (opt_g, opt_d) for s in opt.state.values())  # two AdamW updates each
    assert {"train/d_loss", "train/g_adv", "train/d_weight"} <= set(trainer.callback_metrics)
    assert [s.scheduler.last_epoch for s in trainer.lr_scheduler_configs] == [2, 2]


def test_latent_stats_callback_sets_stats_in_last_ckpt_raw_and_ema(tmp_path):
    module = VideoVAEModule(vae=VIDEO, optim=OPTIM)
    batches = [_video_batch(b=2, seed=i) for i in range(3)]
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, every_n_train_steps=3)
    stats_cb, ema_cb = LatentStats(num_batches=3), EMA(decay=0.5)
    trainer = _trainer(tmp_path, max_steps=3, callbacks=[ema_cb, stats_cb, ckpt_cb])
    trainer.fit(module, DataLoader(batches, batch_size=None))  # last.ckpt saved at step 3, before the stats

    # what the callback must have measured: per-channel moments of the posterior means of the batches
    def expected(vae):
        z = torch.cat([vae.encode(b["video"]).mean for b in batches]).transpose(0, 1).flatten(1)  # (C, N)
        return z.mean(1), z.std(1, unbiased=False)

    ema_vae = copy.deepcopy(module.vae)
    ema_vae.load_state_dict({k[4:]: v for k, v in ema_cb.shadow.items()})
    with torch.no_grad():
        (raw_mean, raw_std), (ema_mean, ema_std) = expected(module.vae.eval()), expected(ema_vae.eval())
    assert not torch.allclose(raw_mean, ema_mean)  # EMA weights differ, and so do their statistics
    assert torch.allclose(module.vae.latent_mean, raw_mean, atol=1e-5)
    assert torch.allclose(module.vae.latent_std, raw_std, atol=1e-5)

    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file() and torch.load(last, weights_only=True)["global_step"] == 3
    vae, config = load_network_from_checkpoint(last, "vae")  # EMA weights by default
    assert config == VIDEO
    assert torch.allclose(vae.latent_mean, ema_mean, atol=1e-5)
    assert torch.allclose(vae.latent_std, ema_std, atol=1e-5)
    raw, _ = load_network_from_checkpoint(last, "vae", use_ema=False)
    assert torch.allclose(raw.latent_mean, raw_mean, atol=1e-5)
    # the normalised latents of the training batches are whitened per channel
    with torch.no_grad():
        z = torch.cat([vae.normalize_latents(vae.encode(b["video"]).mean) for b in batches])
    flat = z.transpose(0, 1).flatten(1)
    assert flat.mean(1).abs().max() < 1e-4 and (flat.std(1, unbiased=False) - 1).abs().max() < 1e-3


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    module = AudioVAEModule(vae=AUDIO, optim=OPTIM)
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(module, DataLoader([_audio_batch((True, True))] * 2, batch_size=None))
    trainer.save_checkpoint(tmp_path / "audio.ckpt")
    ckpt = load_torch_checkpoint(tmp_path / "audio.ckpt")  # weights_only: plain data and tensors only
    assert ckpt["hyper_parameters"]["vae"] == AUDIO
    vae, _ = load_network_from_checkpoint(tmp_path / "audio.ckpt", "vae")
    for k, v in module.vae.state_dict().items():
        assert torch.equal(v, vae.state_dict()[k]), k
    rebuilt = AudioVAEModule.load_from_checkpoint(tmp_path / "audio.ckpt", weights_only=True)
    assert rebuilt.hparams.optim == OPTIM


def test_validation_writes_side_by_side_recons(tmp_path):
    video = VideoVAEModule(vae=VIDEO, optim=OPTIM, num_recon_clips=3)
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=2)
    metrics = trainer.validate(
        video, DataLoader([_video_batch(b=2, seed=i) for i in range(2)], batch_size=None), verbose=False
    )[0]
    assert {"val/psnr", "val/ssim"} <= set(metrics)
    # the logged values are the mean over the 4 clips of the metrics of their posterior-mean reconstructions
    from eval.recon import psnr, ssim
    from sora.media import tensor_to_video

    with torch.no_grad():
        batches = [_video_batch(b=2, seed=s)["video"] for s in range(2)]
        pairs = [
            (tensor_to_video(video.vae(x, sample_posterior=False)[0][i]), tensor_to_video(x[i]))
            for x in batches
            for i in range(2)
        ]
    assert metrics["val/psnr"] == pytest.approx(sum(psnr(r, x) for r, x in pairs) / 4, rel=1e-5)
    assert metrics["val/ssim"] == pytest.approx(sum(ssim(r, x) for r, x in pairs) / 4, rel=1e-5)
    files = sorted((tmp_path / "recon" / "step000000").glob("*.mp4"))
    assert [f.name for f in files] == ["00.mp4", "01.mp4", "02.mp4"]
    from sora.media import probe

    assert probe(files[0]).width == 64  # original | reconstruction

    audio = AudioVAEModule(vae=AUDIO, optim=OPTIM, num_recon_clips=1, recon_dir=str(tmp_path / "a"))
    metrics = _trainer(tmp_path, max_steps=1).validate(
        audio, DataLoader([_audio_batch((True, False))], batch_size=None), verbose=False
    )[0]
    assert {"val/mel_l1", "val/mel_l1_vocoder", "val/vae_mel_l1", "val/spectral_convergence"} <= set(metrics)
    info = probe(tmp_path / "a" / "step000000" / "00.mp4")
    assert info.has_audio
