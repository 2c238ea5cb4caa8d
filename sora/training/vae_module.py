"""LightningModules that train the video VAE and the audio VAE, and the callback measuring latent statistics.

Both modules share :class:`VAEModule`: the network is ``self.vae``, built from the plain-dict hyper-parameter
``vae`` (``{"_target_": ..., **kwargs}``, the contract :func:`sora.checkpoint.load_network_from_checkpoint`
relies on), trained with AdamW + warmup/cosine (:mod:`sora.training.optim`); bf16 autocast and gradient
clipping come from the trainer, EMA from the :class:`~sora.training.ema.EMA` callback (``ema_module()``).

The video VAE can add the 3D PatchGAN of :class:`~sora.training.vae_loss.VideoVAELoss` (``loss.disc_weight >
0``): the module then switches to manual optimization with two optimizers (autoencoder, discriminator), clips
gradients itself (``grad_clip``; the trainer's ``gradient_clip_val`` must be null, Lightning refuses it with
manual optimization), and only the autoencoder's step counts as a ``global_step``.

Validation runs in float32 whatever the training precision, on held-out clips (the experiments use shards of
the synthetic world made with another seed): PSNR and SSIM for video; for audio the log-mel L1 (both from
:mod:`sora.metrics`) on the vocoded reconstruction (``val/mel_l1``; ``val/mel_l1_vocoder`` is the same for
the vocoded *original* mel, the floor the vocoder sets), the L1 in the VAE's own log-mel domain
(``val/vae_mel_l1``) and the spectral convergence of the mel magnitudes. The first ``num_recon_clips`` clips
are written as side-by-side mp4 files (original | reconstruction) under ``<out_dir>/recon/step<N>/`` and
logged to Weights & Biases when it is the logger.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from sora.checkpoint import build_module, sub_state_dict, to_plain_dict
from sora.training.optim import OptimConfig, build_optimizer
from sora.training.parallel import configure_parallelism, full_state_dict, plain_copy

log = logging.getLogger(__name__)

PERCEPTUAL_PREFIX = "loss.perceptual."
DEFAULT_DISC_OPTIM = {"betas": (0.5, 0.9)}  # the usual GAN discriminator betas (pix2pix, VQGAN)


def spectral_convergence(magnitude: Tensor, reference: Tensor) -> Tensor:
    """``||ref - mag||_F / ||ref||_F`` per sample for magnitude spectrograms ``(B, F, N)`` -> ``(B,)``.

    0 is perfect; 1 means an error as large as the reference itself (e.g. predicting silence).
    """
    if magnitude.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(magnitude.shape)} vs {tuple(reference.shape)}")
    diff = (reference.float() - magnitude.float()).flatten(1).norm(dim=1)
    return diff / reference.float().flatten(1).norm(dim=1).clamp_min(1e-8)


@contextlib.contextmanager
def _step_not_counted(optimizer: Any) -> Iterator[None]:
    """Under manual optimization every ``LightningOptimizer.step`` counts as a ``global_step``; the
    discriminator's should not (``max_steps``, checkpoint intervals and schedules count autoencoder steps)."""
    hooks = getattr(optimizer, "_on_before_step", None), getattr(optimizer, "_on_after_step", None)
    if hooks[0] is None:
        yield
        return
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = hooks


def _write_and_log_videos(trainer: L.Trainer, paths: list[Path], key: str) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log(
                {key: [wandb.Video(str(p), format="mp4", caption=p.stem) for p in paths]},
                step=trainer.global_step,
            )


class VAEModule(L.LightningModule):
    """Shared training, validation and checkpoint logic of the VAE modules (subclasses add loss and metrics).

    Args (plain dicts, saved as hyper-parameters so a checkpoint rebuilds itself with ``weights_only=True``):
        vae: the network config (``_target_`` + kwargs), built with :func:`sora.checkpoint.build_module`.
        loss: keyword arguments of the subclass's loss (``VideoVAELoss`` / ``AudioVAELoss``).
        optim: :class:`~sora.training.optim.OptimConfig` fields for the autoencoder.
        num_recon_clips: validation clips written as side-by-side mp4 files at each validation.
        recon_dir: where they go (``<trainer.default_root_dir>/recon`` by default, i.e. ``<out_dir>/recon``).
        activation_checkpointing / compile: applied to the residual blocks by :mod:`sora.training.parallel`
            in ``configure_model`` (with FSDP2 sharding under ``trainer=fsdp``).
    """

    def __init__(
        self,
        *,
        vae: dict,
        loss: dict | None = None,
        optim: dict | None = None,
        num_recon_clips: int = 4,
        recon_dir: str | None = None,
        activation_checkpointing: bool | int | str = False,
        compile: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__()
        if num_recon_clips < 0:
            raise ValueError(f"num_recon_clips must be >= 0, got {num_recon_clips}")
        hp = dict(
            vae=to_plain_dict(vae),
            loss=to_plain_dict(loss) if loss else {},
            optim=to_plain_dict(optim) if optim else {},
            num_recon_clips=int(num_recon_clips),
            recon_dir=recon_dir,
            activation_checkpointing=activation_checkpointing,
            compile=compile,
            **extra,
        )
        self.save_hyperparameters(hp)
        self.vae = build_module(hp["vae"])
        self.loss = self.build_loss(dict(hp["loss"]))
        self.optim_cfg = OptimConfig(**hp["optim"])
        self._recon_written = 0
        self._val_batches = 0

    # ---- what subclasses provide ---------------------------------------------------------------------------

    def build_loss(self, kwargs: dict) -> nn.Module:
        raise NotImplementedError

    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss of a batch and its logged terms."""
        raise NotImplementedError

    def evaluate(self, batch: dict) -> tuple[dict[str, Tensor], list[dict]]:
        """Per-clip validation metrics ``{name: (n,)}`` and per-clip reconstructions (:meth:`write_recon`)."""
        raise NotImplementedError

    def write_recon(self, item: dict, path: Path) -> None:
        """Write one side-by-side reconstruction as an mp4 file."""
        raise NotImplementedError

    def latent_means(self, vae: nn.Module, batch: dict) -> Tensor | None:
        """Posterior means ``(N, C, ...)`` of the batch's clips under ``vae`` (None: no usable clip)."""
        raise NotImplementedError

    # ---- what the callbacks and the rest of the project ask for -------------------------------------------

    def configure_model(self) -> None:
        configure_parallelism(
            self,
            self.vae,
            activation_checkpointing=self.hparams.activation_checkpointing,
            compile=self.hparams.compile,
            others=(getattr(self.loss, "discriminator", None),),
        )

    def ema_module(self) -> nn.Module:
        """The trained network (EMA keys share this module's state_dict prefix ``vae.``)."""
        return nn.ModuleDict({"vae": self.vae})

    @staticmethod
    def batch_size_of(batch: dict) -> int:
        return len(batch["caption"]) if "caption" in batch else int(batch["video"].shape[0])

    # ---- training -----------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, logs = self.compute_loss(batch)
        self.log_train(logs, batch)
        return loss

    def log_train(self, logs: dict[str, Tensor], batch: dict) -> None:
        b = self.batch_size_of(batch)
        self.log("train/loss", logs["loss"], prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in logs.items() if k != "loss"}, batch_size=b)

    def vae_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"vae.{n}", p) for n, p in self.vae.named_parameters()]

    def configure_optimizers(self) -> Any:
        return build_optimizer(self.vae_parameters(), self.optim_cfg)

    # ---- validation ----------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._recon_written, self._val_batches = 0, 0
        self._val_values: dict[str, list[float]] = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val_batches += 1
        # Metrics in float32 whatever the training precision: bf16 rounding alone costs PSNR above ~40 dB.
        with torch.autocast(self.device.type, enabled=False), torch.no_grad():
            metrics, items = self.evaluate(batch)
        for name, values in metrics.items():
            if values.numel():
                self.log(f"val/{name}", values.float().mean(), batch_size=values.numel(), sync_dist=True)
                self._val_values.setdefault(f"val/{name}", []).extend(values.float().tolist())
        self._write_recons(items)

    def on_validation_epoch_end(self) -> None:
        if self._val_batches == 0 and not self.trainer.sanity_checking:
            log.warning("validation saw no batch: check data.val_urls (missing shards are skipped)")
            return
        if not self.trainer.sanity_checking:  # also in train.log whatever the logger (this rank's clips)
            means = {k: float(np.mean(v)) for k, v in sorted(self._val_values.items())}
            n = max((len(v) for v in self._val_values.values()), default=0)
            log.info(
                "step %d, %d clips: %s",
                self.global_step,
                n,
                ", ".join(f"{k} {v:.4g}" for k, v in means.items()),
            )

    def _write_recons(self, items: list[dict]) -> None:
        todo = self.hparams.num_recon_clips - self._recon_written
        if todo <= 0 or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        root = Path(self.hparams.recon_dir or Path(self.trainer.default_root_dir) / "recon")
        folder = root / f"step{self.global_step:06d}"
        paths = []
        for item in items[:todo]:
            path = folder / f"{self._recon_written:02d}.mp4"
            self.write_recon(item, path)
            paths.append(path)
            self._recon_written += 1
        _write_and_log_videos(self.trainer, paths, "val/recon")

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The LPIPS network is the user's own file (loaded again from its path): not copied into checkpoints.
        sd = checkpoint.get("state_dict", {})
        for k in [k for k in sd if k.startswith(PERCEPTUAL_PREFIX)]:
            del sd[k]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint.get("state_dict")
        if sd is not None:
            sd.update({k: v for k, v in self.state_dict().items() if k.startswith(PERCEPTUAL_PREFIX)})

    def train(self, mode: bool = True) -> VAEModule:
        super().train(mode)
        perceptual = getattr(self.loss, "perceptual", None)
        if perceptual is not None:  # frozen LPIPS stays in eval mode (it has dropout)
            perceptual.eval()
        return self


class VideoVAEModule(VAEModule):
    """Trains :class:`~sora.models.video_vae.CausalVideoVAE` on ``batch["video"] (B, 3, T, H, W)`` in [-1, 1].

    Args (besides :class:`VAEModule`'s):
        loss: :class:`~sora.training.vae_loss.VideoVAELoss` kwargs; ``disc_weight > 0`` turns on the 3D
            PatchGAN (from ``disc_start_step``, adaptive weight) and manual optimization;
            ``perceptual_weight > 0`` needs ``lpips_weights_path`` (a local file: nothing is downloaded).
        disc_optim: OptimConfig fields of the discriminator, over ``optim`` (default betas ``(0.5, 0.9)``).
        grad_clip: gradient-norm clip of both optimizers under manual optimization (GAN only; without the GAN
            the trainer's ``gradient_clip_val`` clips).
    """

    def __init__(
        self,
        *,
        vae: dict,
        loss: dict | None = None,
        optim: dict | None = None,
        disc_optim: dict | None = None,
        grad_clip: float | None = 1.0,
        num_recon_clips: int = 4,
        recon_dir: str | None = None,
        activation_checkpointing: bool | int | str = False,
        compile: bool = False,
    ) -> None:
        super().__init__(
            vae=vae,
            loss=loss,
            optim=optim,
            num_recon_clips=num_recon_clips,
            recon_dir=recon_dir,
            activation_checkpointing=activation_checkpointing,
            compile=compile,
            disc_optim=to_plain_dict(disc_optim) if disc_optim else {},
            grad_clip=grad_clip,
        )
        self.automatic_optimization = self.loss.discriminator is None
        self.disc_optim_cfg = OptimConfig(
            **{**self.hparams.optim, **DEFAULT_DISC_OPTIM, **self.hparams.disc_optim}
        )

    def build_loss(self, kwargs: dict) -> nn.Module:
        from sora.training.vae_loss import VideoVAELoss

        return VideoVAELoss(**kwargs)

    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        video = batch["video"]  # (B, 3, T, H, W)
        recon, posterior = self.vae(video)  # (B, 3, T, H, W), mean/logvar (B, C, t, h, w)
        return self.loss(video, recon, posterior, step=self.global_step, last_layer=self.vae.last_layer)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)
        return self._adversarial_step(batch)

    def _clip(self, optimizer: Any) -> None:
        if self.hparams.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm"
            )

    def _adversarial_step(self, batch: dict) -> Tensor:
        """One autoencoder step (with the adversarial term once active), then one discriminator step."""
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        video, step = batch["video"], self.global_step
        recon, posterior = self.vae(video)  # (B, 3, T, H, W)
        loss, logs = self.loss(video, recon, posterior, step=step, last_layer=self.vae.last_layer)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)  # also reaches the discriminator: its grads are zeroed before its own step
        self._clip(opt_g)
        opt_g.step()
        sched_g.step()

        d_loss, d_logs = self.loss.discriminator_loss(video, recon, step=step)  # recon is detached inside
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        self._clip(opt_d)
        with _step_not_counted(opt_d):
            opt_d.step()
        sched_d.step()
        self.log_train({**logs, **d_logs}, batch)
        return loss.detach()

    def configure_optimizers(self) -> Any:
        vae = super().configure_optimizers()
        if self.automatic_optimization:
            return vae
        disc = [(f"loss.discriminator.{n}", p) for n, p in self.loss.discriminator.named_parameters()]
        return [vae, build_optimizer(disc, self.disc_optim_cfg)]

    def evaluate(self, batch: dict) -> tuple[dict[str, Tensor], list[dict]]:
        from sora.media import tensor_to_video
        from sora.metrics import psnr, ssim

        video = batch["video"].float()  # (B, 3, T, H, W)
        recon, _ = self.vae(video, sample_posterior=False)  # posterior mean: deterministic
        fps = torch.as_tensor(batch.get("fps", 24.0)).reshape(-1).float()
        values: dict[str, list[float]] = {"psnr": [], "ssim": []}
        items = []
        for i in range(video.shape[0]):
            ref, rec = tensor_to_video(video[i]), tensor_to_video(recon[i])  # uint8 (T, H, W, 3)
            values["psnr"].append(psnr(rec, ref))
            values["ssim"].append(ssim(rec, ref))
            items.append(
                {"frames": np.concatenate([ref, rec], axis=2), "fps": float(fps[min(i, len(fps) - 1)])}
            )
        return {k: torch.tensor(v, device=self.device) for k, v in values.items()}, items

    def write_recon(self, item: dict, path: Path) -> None:
        from sora.media import write_mp4

        write_mp4(path, item["frames"], item["fps"])  # (T, H, 2W, 3): original | reconstruction

    def latent_means(self, vae: nn.Module, batch: dict) -> Tensor | None:
        return vae.encode(batch["video"].float()).mean  # (B, C, t, h, w)


class AudioVAEModule(VAEModule):
    """Trains :class:`~sora.models.audio_vae.AudioVAE` on ``batch["audio"] (B, 1, S)``; clips with
    ``has_audio`` false are masked out of the loss, the metrics and the latent statistics.

    Args: those of :class:`VAEModule`; ``loss`` holds :class:`~sora.training.vae_loss.AudioVAELoss` kwargs.
    """

    def __init__(
        self,
        *,
        vae: dict,
        loss: dict | None = None,
        optim: dict | None = None,
        num_recon_clips: int = 4,
        recon_dir: str | None = None,
        activation_checkpointing: bool | int | str = False,
        compile: bool = False,
    ) -> None:
        super().__init__(
            vae=vae,
            loss=loss,
            optim=optim,
            num_recon_clips=num_recon_clips,
            recon_dir=recon_dir,
            activation_checkpointing=activation_checkpointing,
            compile=compile,
        )

    def build_loss(self, kwargs: dict) -> nn.Module:
        from sora.training.vae_loss import AudioVAELoss

        return AudioVAELoss(**kwargs)

    @staticmethod
    def _has_audio(batch: dict) -> Tensor:
        audio = batch["audio"]
        has = batch.get("has_audio")
        if has is None:
            return torch.ones(audio.shape[0], dtype=torch.bool, device=audio.device)
        return torch.as_tensor(has, device=audio.device).bool().reshape(-1)

    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        recon, target, posterior = self.vae(batch["audio"])  # log-mels (B, n_mels, 4L), latents (B, C, L)
        return self.loss(recon, target, posterior, self._has_audio(batch))

    def evaluate(self, batch: dict) -> tuple[dict[str, Tensor], list[dict]]:
        from sora.metrics import log_mel_l1

        mask = self._has_audio(batch)
        if not bool(mask.any()):
            return {}, []
        audio = batch["audio"][mask].float()  # (n, 1, S)
        num_samples = audio.shape[-1]
        recon, target, _ = self.vae(audio, sample_posterior=False)  # (n, n_mels, 4L)
        wav = self.vae.vocoder(recon)[..., :num_samples]  # (n, 1, S)
        floor = self.vae.vocoder(target)[..., :num_samples]  # the vocoder alone, on the true mel
        sr = int(self.vae.sample_rate)
        ref = audio.cpu().numpy()
        values = {
            "vae_mel_l1": (recon - target).abs().mean(dim=(1, 2)),
            "spectral_convergence": spectral_convergence(recon.exp(), target.exp()),
            "mel_l1": torch.tensor([log_mel_l1(w, r, sr) for w, r in zip(wav.cpu().numpy(), ref)]),
            "mel_l1_vocoder": torch.tensor([log_mel_l1(w, r, sr) for w, r in zip(floor.cpu().numpy(), ref)]),
        }
        fps = float(torch.as_tensor(batch.get("fps", 24.0)).reshape(-1)[0])
        items = [
            {
                "target": target[i].cpu(),
                "recon": recon[i].cpu(),
                "audio": ref[i],
                "recon_audio": wav[i].cpu().numpy(),
                "sample_rate": sr,
                "fps": fps,
            }
            for i in range(audio.shape[0])
        ]
        return {k: v.to(self.device) for k, v in values.items()}, items

    def write_recon(self, item: dict, path: Path) -> None:
        """Frames: original log-mel | reconstructed log-mel with a moving cursor; sound: original then
        reconstruction (vocoded), so one file plays both."""
        from sora.media import write_mp4

        left, right = _mel_image(item["target"]), _mel_image(item["recon"])  # uint8 (2M, 2F, 3)
        panel = np.concatenate([left, right], axis=1)  # (2M, 4F, 3)
        sound = np.concatenate([item["audio"], item["recon_audio"]], axis=-1)  # (1, 2S)
        seconds = item["audio"].shape[-1] / item["sample_rate"]
        n = max(1, math.ceil(2 * seconds * item["fps"]))
        width = left.shape[1]
        frames = np.repeat(panel[None], n, axis=0)  # (n, 2M, 4F, 3)
        for k in range(n):
            col = min(int(k / n * 2 * width), 2 * width - 1)  # first half: left panel, then right panel
            frames[k, :, col] = (255, 64, 64)
        write_mp4(path, frames, item["fps"], sound, item["sample_rate"])

    def latent_means(self, vae: nn.Module, batch: dict) -> Tensor | None:
        mask = self._has_audio(batch)
        if not bool(mask.any()):
            return None
        return vae.encode(batch["audio"][mask].float()).mean  # (n, C, L)


def _mel_image(log_mel: Tensor) -> np.ndarray:
    """Log-mel ``(M, F)`` (natural log, floor -11.5) -> uint8 RGB ``(2M, 2F, 3)``, low frequencies below."""
    x = ((log_mel.float().clamp(-11.5, 3.0) + 11.5) / 14.5).flip(0)  # (M, F) in [0, 1]
    rgb = torch.stack([x.sqrt(), x, x.pow(2)], dim=-1)  # dark blue-black -> yellow-white ramp
    img = (rgb * 255).round().to(torch.uint8).repeat_interleave(2, 0).repeat_interleave(2, 1)
    return img.numpy()


class LatentStats(L.Callback):
    """At the end of training, per-channel mean/std of the posterior means of ``num_batches`` train batches.

    The stats are set on the VAE (``vae.set_latent_stats``) so ``normalize_latents`` whitens latents for the
    DiT. When an :class:`~sora.training.ema.EMA` callback ran, the EMA weights get their own statistics
    (measured with the EMA encoder) written into the EMA shadow, which is what
    :func:`sora.checkpoint.load_network_from_checkpoint` loads by default. The last checkpoint of every
    ``ModelCheckpoint`` is then saved again so ``last.ckpt`` carries them (a ``last.ckpt`` that
    ``ModelCheckpoint`` or ``train.py`` writes after this hook has them anyway). Periodic step checkpoints
    keep identity statistics: they are resume points.

    Batches come from a fresh pass over the training data (the datamodule's resume state is restored after);
    sums are all-reduced across ranks, so every rank sets the same statistics.
    """

    def __init__(self, num_batches: int = 8) -> None:
        if num_batches < 1:
            raise ValueError(f"latent_stats.num_batches must be >= 1, got {num_batches}")
        self.num_batches = num_batches
        self.stats: dict[str, tuple[Tensor, Tensor]] = {}

    def _batches(self, trainer: L.Trainer) -> Iterator[dict]:
        dm = trainer.datamodule
        if dm is None:
            loader = trainer.train_dataloader
            yield from islice(iter(loader), self.num_batches)
            return
        state = dm.state_dict()  # iterating the training loader again must not move the resume point
        try:
            yield from islice(iter(dm.train_dataloader()), self.num_batches)
        finally:
            dm.load_state_dict(state)

    @staticmethod
    def _moments(z: Tensor) -> Tensor:
        """``(N, C, ...)`` -> ``(3, C)`` float64: count, sum, sum of squares per channel."""
        flat = z.detach().transpose(0, 1).reshape(z.shape[1], -1).double()  # (C, N * ...)
        return torch.stack([torch.full_like(flat[:, 0], flat.shape[1]), flat.sum(1), flat.pow(2).sum(1)])

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: VAEModule) -> dict[str, tuple[Tensor, Tensor]]:
        from sora.training.ema import EMA

        vae = pl_module.vae
        sharded = any(hasattr(p, "full_tensor") for p in vae.parameters())  # FSDP2: measure a plain copy

        def build() -> nn.Module:
            return build_module(pl_module.hparams.vae)

        nets: dict[str, nn.Module] = {"raw": plain_copy(vae, build) if sharded else vae}
        ema = next((c for c in trainer.callbacks if isinstance(c, EMA)), None)
        if ema is not None and ema.shadow:
            ema_vae = plain_copy(vae, build)
            ema_vae.load_state_dict(full_state_dict(sub_state_dict(ema.shadow, "vae")), strict=False)
            nets["ema"] = ema_vae
        was_training = pl_module.training
        pl_module.eval()
        moments: dict[str, Tensor] = {}
        try:
            for batch in self._batches(trainer):
                batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                for name, net in nets.items():
                    z = pl_module.latent_means(net.eval(), batch)
                    if z is not None:
                        m = self._moments(z)
                        moments[name] = moments[name] + m if name in moments else m
        finally:
            pl_module.train(was_training)
        channels = pl_module.vae.latent_mean.shape[0]
        out = {}
        for name in nets:  # every rank reduces every net (a collective), even with no batch of its own
            m = moments.get(name, torch.zeros(3, channels, dtype=torch.float64, device=pl_module.device))
            m = trainer.strategy.reduce(m, reduce_op="sum")
            if float(m[0].min()) == 0:
                log.warning("latent stats: no usable batch (no data, or no clip with audio): identity kept")
                return {}
            mean = m[1] / m[0]
            std = (m[2] / m[0] - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-6)
            out[name] = (mean.float(), std.float())
        return out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "latent_means"):
            raise TypeError(
                f"{type(pl_module).__name__} has no latent_means(): LatentStats needs a VAEModule"
            )
        self.stats = self.measure(trainer, pl_module)
        if not self.stats:
            return
        pl_module.vae.set_latent_stats(*self.stats["raw"])
        if "ema" in self.stats:
            from sora.training.ema import EMA

            ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
            mean, std = self.stats["ema"]
            ema.shadow["vae.latent_mean"].copy_(mean)
            ema.shadow["vae.latent_std"].copy_(std)
        mean, std = self.stats.get("ema", self.stats["raw"])
        log.info(
            "latent stats: mean %s std %s",
            [round(v, 3) for v in mean.tolist()],
            [round(v, 3) for v in std.tolist()],
        )
        for cb in trainer.checkpoint_callbacks:
            last = getattr(cb, "last_model_path", "")
            if last:
                trainer.save_checkpoint(last)
