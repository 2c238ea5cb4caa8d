"""LightningModule that trains the joint audio+video DiT with rectified flow.

Two data paths feed the same step:
- latent batches (``video_latent`` (B, C, t, h, w), ``audio_latent`` (B, C, L)) from the latent cache:
  the fast path;
- pixel batches (``video`` (B, 3, T, H, W), ``audio`` (B, 1, S)) encoded on the fly by the frozen VAEs:
  small runs.
Either way latents are normalised with the VAEs' per-channel statistics before noising.

The frozen VAEs live inside the module (as ``video_vae`` / ``audio_vae``), so one ``.ckpt`` holds everything
needed to generate clips; they are excluded from the optimizer and from EMA.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from sora.checkpoint import build_module, load_network_from_checkpoint, to_plain_dict
from sora.diffusion.flow import (
    ConditioningCurriculum,
    add_noise,
    flow_loss,
    sample_logit_normal,
    shift_timesteps,
    token_count_shift,
    velocity_target,
)
from sora.training.optim import OptimConfig, build_optimizer
from sora.training.parallel import configure_parallelism
from sora.training.text_align import alignment_loss, info_nce, load_into, pool, pooled

log = logging.getLogger(__name__)

DEFAULT_FLOW = {
    "logit_mean": 0.0,
    "logit_std": 1.0,
    "shift": "tokens",  # "tokens": token_count_shift(num tokens) (Flux rule); or a number; or 1.0 for none
    "base_tokens": 256,
    "max_tokens": 4096,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "video_weight": 1.0,
    "audio_weight": 1.0,
}


DEFAULT_TEXT_ALIGN = {"weight": 0.0, "form": "short", "temperature": 0.1}


def _frozen(net: nn.Module) -> nn.Module:
    net.eval().requires_grad_(False)
    return net


def _take(value: Any, idx: list[int] | slice) -> Any:
    """The items ``idx`` (indices or a slice) of a batch entry (tensors, lists, tuples); anything else as it
    is."""
    if isinstance(value, Tensor) and value.ndim > 0:
        return value[idx if isinstance(idx, slice) else torch.as_tensor(idx, device=value.device)]
    if isinstance(value, list | tuple):
        return value[idx] if isinstance(idx, slice) else [value[i] for i in idx]
    return value


class AVDiTModule(L.LightningModule):
    """Rectified-flow training of :class:`sora.models.dit.AVDiT` with a per-sample conditioning curriculum.

    Args (all plain dicts, saved as hyper-parameters so a checkpoint rebuilds itself):
        dit: the AVDiT config (``_target_`` + kwargs); ``text_dim`` must equal the text encoder's ``dim``.
        text_encoder: a TextEncoder config (the default hashed-word encoder trains with the DiT).
        video_vae / audio_vae: network configs of the frozen VAEs, or None; ``video_vae_ckpt`` /
            ``audio_vae_ckpt`` load their trained weights (and config) from a VAE training checkpoint instead.
        text_encoder_ckpt: start the trainable text encoder from these weights (a file of
            :func:`sora.training.text_align.save`, e.g. caption-form alignment pretraining; its settings must
            match ``text_encoder``). Not stored: the weights are in this module's own checkpoints.
        flow: timestep distribution and loss weights (see DEFAULT_FLOW).
        curriculum: ``mode_probs`` and ``caption_dropout`` for :class:`ConditioningCurriculum`.
        optim: :class:`OptimConfig` fields.
        audio_latent_rate: audio latent frames per second (25 for the default audio VAE).
        video_temporal_compression: used when no video VAE is attached (latent-only training).
        sampling: generation defaults stored for the pipeline (fps, num_frames, height, width,
            max_num_frames).
        image_prob: probability that a training step is a text-to-image step on the first latent frame of
            every clip (with the audio latent of the same instant, given clean). A causal VAE encodes a
            clip's first frame alone, so that latent is the image's latent: no extra data is needed, and the
            step has about 1/T of a video step's FLOPs. Images teach what the caption says about appearance
            and layout (colours, shapes, where things start) at that lower cost; see ``use_image_step``.
        image_first_steps: the first steps of training are all text-to-image steps (then ``image_prob``).
        image_first_max_objects: during those first steps, only clips whose metadata lists at most this many
            ``objects`` (the synthetic world's; clips without the key always count) are trained on (the
            others are left out of the step, not computed and masked); None: every clip. On the world,
            layout binding (left/right) emerges reliably from single-object images and only by chance from
            mixed ones (README, "Why left/right is at chance"). With ``data.batch_size`` 2N and
            ``video_batch_size`` N, a warm-up step keeps ~N single-object images of a slice with one or two
            objects a clip.
        image_first_caption_dropout: the caption dropout of those first steps (None: the curriculum's).
            Dropout delays the binding of left/right (README); 0 keeps every caption during the warm-up.
        video_batch_size: video steps train on the first N clips of each batch, text-to-image steps on all of
            them: with ``data.batch_size`` k x N, image steps (about 1/T of a video step's FLOPs per clip) get
            k times the batch, and the gradient noise that delays learning left from right drops with it
            (README, "Why left/right is at chance"). None: every clip in every step.
        image_audio: text-to-image steps also generate the clip's whole sound: its audio latent noised at the
            image's timestep, in the loss (the step's clips that have sound), where it otherwise goes in clean
            as the first frame's instant with no loss. The audio stream then trains in every step, not only
            in the video steps that follow the warm-up (the generated sound's level follows how many steps
            trained it: README, "A DiT that ends on time"), for ~L/T more tokens per image step.
        text_align: ``{weight, form, temperature}`` (DEFAULT_TEXT_ALIGN; weight 0 = off): an auxiliary loss
            on the trainable text encoder, added to every step's: the symmetric InfoNCE, at ``temperature``,
            between the normalised mean-pooled encodings of each clip's training caption and of another
            caption form of the same clip (``meta["captions"][form]``; for a clip trained on that form, the
            txt it replaced, ``meta["caption_txt"]``), the batch's other clips as negatives. A long dense
            caption says where things are in many phrasings, among words of the same kind that say where they
            go ("at the bottom right ... rolls to the left"); aligning it with the terse form makes the
            encoder pull out what the terse form says. Without it the DiT never learned left from right on
            dense captions (README, "Dense captions and the text encoder").
        activation_checkpointing (false, true/'full', or k for every k-th block; the one switch) / compile:
            applied by :mod:`sora.training.parallel` in ``configure_model`` (with FSDP2 under
            ``trainer=fsdp``).
    """

    def __init__(
        self,
        *,
        dit: dict,
        text_encoder: dict,
        video_vae: dict | None = None,
        audio_vae: dict | None = None,
        video_vae_ckpt: str | None = None,
        audio_vae_ckpt: str | None = None,
        text_encoder_ckpt: str | None = None,
        flow: dict | None = None,
        curriculum: dict | None = None,
        optim: dict | None = None,
        audio_latent_rate: float = 25.0,
        video_temporal_compression: int = 4,
        sampling: dict | None = None,
        image_prob: float = 0.0,
        image_first_steps: int = 0,
        image_first_max_objects: int | None = None,
        image_first_caption_dropout: float | None = None,
        video_batch_size: int | None = None,
        image_audio: bool = False,
        text_align: dict | None = None,
        activation_checkpointing: bool | int | str = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        # VAE weights come from their own checkpoints: store their configs, so this checkpoint rebuilds alone.
        vnet = anet = None
        if video_vae_ckpt:
            vnet, video_vae = load_network_from_checkpoint(video_vae_ckpt, "vae")
        if audio_vae_ckpt:
            anet, audio_vae = load_network_from_checkpoint(audio_vae_ckpt, "vae")
        hp = dict(
            dit=to_plain_dict(dit),
            text_encoder=to_plain_dict(text_encoder),
            video_vae=to_plain_dict(video_vae) if video_vae else None,
            audio_vae=to_plain_dict(audio_vae) if audio_vae else None,
            flow={**DEFAULT_FLOW, **(to_plain_dict(flow) if flow else {})},
            curriculum=to_plain_dict(curriculum) if curriculum else {},
            optim=to_plain_dict(optim) if optim else {},
            audio_latent_rate=float(audio_latent_rate),
            video_temporal_compression=int(video_temporal_compression),
            sampling=to_plain_dict(sampling) if sampling else {},
            image_prob=float(image_prob),
            image_first_steps=int(image_first_steps),
            image_first_max_objects=None if image_first_max_objects is None else int(image_first_max_objects),
            image_first_caption_dropout=(
                None if image_first_caption_dropout is None else float(image_first_caption_dropout)
            ),
            video_batch_size=None if video_batch_size is None else int(video_batch_size),
            image_audio=bool(image_audio),
            text_align={**DEFAULT_TEXT_ALIGN, **(to_plain_dict(text_align) if text_align else {})},
            activation_checkpointing=activation_checkpointing,
            compile=compile,
        )
        self.save_hyperparameters(hp)
        self.text_encoder = build_module(hp["text_encoder"])
        if text_encoder_ckpt:  # a pretrained start (sora.training.text_align); the weights then live in ours
            load_into(self.text_encoder, hp["text_encoder"], text_encoder_ckpt)
        if self.hparams.dit.get("text_dim") != self.text_encoder.dim:
            raise ValueError(
                f"dit.text_dim={self.hparams.dit.get('text_dim')} must equal the text encoder's dim "
                f"{self.text_encoder.dim}"
            )
        self.dit = build_module(hp["dit"])
        self.video_vae = _frozen(vnet if vnet is not None else build_module(video_vae)) if video_vae else None
        self.audio_vae = _frozen(anet if anet is not None else build_module(audio_vae)) if audio_vae else None
        if not 0.0 <= image_prob <= 1.0:
            raise ValueError(f"image_prob must be in [0, 1], got {image_prob}")
        if image_first_max_objects is not None and int(image_first_max_objects) < 1:
            raise ValueError(f"image_first_max_objects must be >= 1 or null, got {image_first_max_objects}")
        if image_first_caption_dropout is not None and not 0.0 <= image_first_caption_dropout <= 1.0:
            raise ValueError(
                f"image_first_caption_dropout must be in [0, 1] or null, got {image_first_caption_dropout}"
            )
        if video_batch_size is not None and int(video_batch_size) < 1:
            raise ValueError(f"video_batch_size must be >= 1 or null, got {video_batch_size}")
        align = hp["text_align"]
        if set(align) - set(DEFAULT_TEXT_ALIGN):
            raise ValueError(f"text_align: unknown keys {sorted(set(align) - set(DEFAULT_TEXT_ALIGN))}")
        if float(align["weight"]) < 0 or float(align["temperature"]) <= 0:
            raise ValueError(f"text_align needs weight >= 0 and temperature > 0, got {align}")
        if float(align["weight"]) > 0 and not getattr(self.text_encoder, "trainable", False):
            raise ValueError(
                "text_align.weight > 0 needs a trainable text encoder (a frozen one cannot align)"
            )
        self.curriculum = ConditioningCurriculum(**hp["curriculum"])
        self._image_step = False
        self._step_text: tuple[list[str], Tensor, Tensor] | None = None  # the last step's encoded captions
        self._stored_text_warned = False
        self.optim_cfg = OptimConfig(**hp["optim"])

    # ---- what the callbacks and the pipeline ask for -------------------------------------------------------

    def ema_module(self) -> nn.Module:
        """The trained networks (EMA keys share this module's state_dict prefixes)."""
        nets = {"dit": self.dit}
        if getattr(self.text_encoder, "trainable", False):
            nets["text_encoder"] = self.text_encoder
        return nn.ModuleDict(nets)

    @property
    def temporal_compression(self) -> int:
        vae = self.video_vae
        return int(vae.temporal_compression) if vae is not None else self.hparams.video_temporal_compression

    def flops_per_batch(self, batch: dict) -> float:
        """Model FLOPs of one training step (forward + backward) on ``batch`` (see sora.models.dit)."""
        batch = self.step_batch(batch)
        zv, za = self._latent_shapes(batch)
        if self._image_step:  # the last step trained on first frames only (image_prob)
            zv, za = (*zv[:2], 1, *zv[3:]), (*za[:2], 1) if za is not None else None
        stored = self.stored_text(batch)
        n_text = (  # padded length, as in encode
            stored[0].shape[1] if stored is not None else self.text_encoder.num_tokens(list(batch["caption"]))
        )
        return float(self.dit.estimate_flops(zv, za, num_text_tokens=n_text, training=True))

    def configure_model(self) -> None:
        configure_parallelism(
            self,
            self.dit,
            activation_checkpointing=self.hparams.activation_checkpointing,
            compile=self.hparams.compile,
            others=(self.text_encoder,),
        )

    # ---- data -> normalised latents ------------------------------------------------------------------------

    def _latent_shapes(self, batch: dict) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        if "video_latent" in batch:
            za = batch.get("audio_latent")
            return tuple(batch["video_latent"].shape), tuple(za.shape) if za is not None else None
        b, _, t, h, w = batch["video"].shape
        s = self.video_vae.spatial_compression if self.video_vae is not None else 8
        zv = (b, self.dit.video_channels, 1 + (t - 1) // self.temporal_compression, h // s, w // s)
        if self.audio_vae is None or "audio" not in batch:
            return zv, None
        return zv, (b, self.dit.audio_channels, self.audio_vae.latent_length(batch["audio"].shape[-1]))

    @torch.no_grad()
    def encode_batch(self, batch: dict) -> tuple[Tensor, Tensor | None]:
        """Normalised latents (B, C, t, h, w) and (B, C, L) (None without an audio stream)."""
        if "video_latent" in batch:
            zv, za = batch["video_latent"].float(), batch.get("audio_latent")
            za = za.float() if za is not None else None
        else:
            if self.video_vae is None:
                raise ValueError("pixel batches need a video VAE: set video_vae or video_vae_ckpt")
            zv = self.video_vae.encode(batch["video"].float()).mode()
            za = self.audio_vae.encode(batch["audio"].float()).mode() if self.audio_vae is not None else None
        if self.video_vae is not None:
            zv = self.video_vae.normalize_latents(zv)
        if za is not None and self.audio_vae is not None:
            za = self.audio_vae.normalize_latents(za)
        return zv, za

    def encode_text(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        emb, mask = self.text_encoder.encode(list(captions))
        return emb.to(self.device), mask.to(self.device)

    def _encode_step_text(self, batch: dict) -> tuple[Tensor, Tensor]:
        """A training step's caption encodings, kept for the step's text_align_loss: the batch's stored ones
        (:meth:`stored_text`) or :meth:`encode_text` of its captions."""
        captions = list(batch["caption"])
        stored = self.stored_text(batch)
        emb, mask = stored if stored is not None else self.encode_text(captions)
        self._step_text = (captions, emb, mask)
        return emb, mask

    def stored_text(self, batch: dict) -> tuple[Tensor, Tensor] | None:
        """The text embeddings a latent batch carries (``text_emb``, ``text_mask``: the latents were made with
        a frozen text encoder), when every clip's were made by an encoder with this module's encoder's
        :meth:`~sora.models.text.TextEncoder.fingerprint`: then the step skips the encoder. Otherwise None
        (the captions are encoded), with a warning, once, that says why."""
        if "text_emb" not in batch:
            return None
        trainable = bool(getattr(self.text_encoder, "trainable", False))
        mine = None if trainable else self.text_encoder.fingerprint()
        theirs = {(m.get("latent") or {}).get("text_encoder") for m in batch.get("meta") or [{}]}
        if mine is not None and theirs == {mine}:
            return batch["text_emb"].to(self.device), batch["text_mask"].to(self.device).bool()
        if not self._stored_text_warned:
            self._stored_text_warned = True
            why = (
                "this run's text encoder trains with the DiT"
                if trainable
                else f"they were made by text encoder {sorted(str(t or 'unknown') for t in theirs)}, this "
                f"run's is {mine or 'one without a fingerprint'}"
            )
            log.warning("the latents' stored text embeddings are not used (%s): encoding the captions", why)
        return None

    def frame_seconds(self, fps: Any, batch_size: int) -> Tensor:
        fps = torch.as_tensor(fps, dtype=torch.float32, device=self.device).reshape(-1)
        fps = fps.expand(batch_size) if fps.numel() == 1 else fps
        return self.temporal_compression / fps  # (B,) seconds per video latent frame

    # ---- the step ------------------------------------------------------------------------------------------

    def sample_t(self, batch_size: int, num_tokens: int) -> Tensor:
        f = self.hparams.flow
        t = sample_logit_normal(batch_size, f["logit_mean"], f["logit_std"], device=self.device)
        shift = f["shift"]
        if shift == "tokens":
            shift = token_count_shift(
                num_tokens, f["base_tokens"], f["base_shift"], f["max_shift"], f["max_tokens"]
            )
        return shift_timesteps(t, float(shift))

    def use_image_step(self) -> bool:
        """Whether this training step is a text-to-image step (``image_prob``). Drawn from the global step,
        so every rank of a data-parallel job makes the same choice and runs the same graph."""
        p = self.hparams.get("image_prob", 0.0)
        if not self.training:
            return False
        if self.global_step < self.hparams.get("image_first_steps", 0):
            return True
        if p <= 0:
            return False
        g = torch.Generator().manual_seed(int(self.global_step) * 7919 + 17)
        return bool(torch.rand((), generator=g) < p)

    def video_batch(self, batch: dict) -> dict:
        """The first ``video_batch_size`` clips of ``batch`` (all of them when None or fewer)."""
        n = self.hparams.get("video_batch_size")
        if n is None or len(batch["caption"]) <= n:
            return batch
        return {k: _take(v, slice(0, n)) for k, v in batch.items()}

    def expected_image_steps(self, start: int, end: int, first: int | None = None) -> float:
        """How many of the training steps ``start .. end - 1`` are expected to be text-to-image steps: those
        of the warm-up (``image_first_steps``, or ``first``: a plan's) and ``image_prob`` of the others (the
        progress log's time to go and :class:`sora.training.deadline.DeadlineReplan`'s plans: image steps
        cost a fraction of video steps)."""
        first = self.hparams.get("image_first_steps", 0) if first is None else first
        warm = max(0, min(end, first) - start)
        return warm + self.hparams.get("image_prob", 0.0) * max(0, end - max(start, first))

    def in_image_warm_up(self) -> bool:
        """Whether this is one of the first ``image_first_steps`` training steps (all text-to-image)."""
        return self.training and self.global_step < self.hparams.get("image_first_steps", 0)

    def step_batch(self, batch: dict) -> dict:
        """The clips the step that :meth:`compute_loss` drew trains on: a video step's ``video_batch``; in the
        image warm-up with ``image_first_max_objects``, the clips within the limit (all of them when none
        is: the step then keeps its graph, with nothing in the loss)."""
        if not self._image_step:
            return self.video_batch(batch)
        keep = self._image_loss_mask(batch, len(batch["caption"]))[:, 0].tolist()
        if all(keep) or not any(keep):
            return batch
        idx = [i for i, k in enumerate(keep) if k]
        return {k: _take(v, idx) for k, v in batch.items()}

    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        self._image_step, self._step_text = self.use_image_step(), None
        batch = self.step_batch(batch)
        zv, za = self.encode_batch(batch)  # (B, C, T, H, W), (B, C, L)
        b = zv.shape[0]
        if self._image_step:
            return self._image_loss(batch, zv, za)
        has_audio = self._has_audio(batch, b, za is not None)
        n_video, n_audio = self.dit.num_tokens(tuple(zv.shape), tuple(za.shape) if za is not None else None)
        t = self.sample_t(b, n_video + n_audio)  # (B,)
        v_sec = self.frame_seconds(batch["fps"], b)
        a_sec = 1.0 / self.hparams.audio_latent_rate
        cond = self.curriculum.sample(
            t,
            zv.shape[2],
            za.shape[2] if za is not None else 0,
            has_audio,
            video_frame_seconds=float(v_sec[0]),
            audio_frame_seconds=a_sec,
            video_temporal_compression=self.temporal_compression,
        )
        noise_v = torch.randn_like(zv)
        xv = add_noise(zv, noise_v, cond.t_video)
        xa, noise_a, t_audio = None, None, None
        if za is not None:
            noise_a = torch.randn_like(za)
            xa, t_audio = add_noise(za, noise_a, cond.t_audio), cond.t_audio
        text, text_mask = self._encode_step_text(batch)
        pred_v, pred_a = self.dit(
            xv,
            xa,
            cond.t_video,
            t_audio,
            text,
            text_mask,
            video_frame_seconds=v_sec,
            audio_frame_seconds=a_sec,
            drop_text=cond.drop_text,
        )
        f = self.hparams.flow
        return flow_loss(
            {"video": pred_v, "audio": pred_a},
            {
                "video": velocity_target(zv, noise_v),
                "audio": velocity_target(za, noise_a) if za is not None else None,
            },
            {"video": cond.video_loss_mask, "audio": cond.audio_loss_mask if za is not None else None},
            weights={"video": f["video_weight"], "audio": f["audio_weight"]},
        )

    def _image_loss(self, batch: dict, zv: Tensor, za: Tensor | None) -> dict[str, Tensor]:
        """Flow loss of text-to-image on each clip's first latent frame. The audio latent of that instant
        goes in clean (t = 0, no loss), so every parameter takes part as in a video step (DDP needs that);
        with ``image_audio`` the clip's whole audio latent is generated beside the image instead. Clips
        without audio (``za`` None) train the video stream alone (single-process runs only)."""
        zv = zv[:, :, :1]
        b = zv.shape[0]
        sound = za is not None and bool(self.hparams.get("image_audio"))
        instant = tuple(za[:, :, :1].shape) if za is not None else None
        if za is not None and not sound:
            za = za[:, :, :1]
        n_video, n_audio = self.dit.num_tokens(tuple(zv.shape), instant)  # the image's shift either way
        t = self.sample_t(b, n_video + n_audio)[:, None]  # (B, 1): one frame
        noise_v = torch.randn_like(zv)
        audio_in = t_audio = audio_target = audio_mask = None  # no audio: the video stream alone
        if sound:  # the clip's whole sound, noised at the image's timestep: (B, Ca, L), t (B, L)
            noise_a = torch.randn_like(za)
            t_audio = t.expand(b, za.shape[2])
            audio_in, audio_target = add_noise(za, noise_a, t_audio), velocity_target(za, noise_a)
            audio_mask = self._has_audio(batch, b, True)
        elif za is not None:
            t_audio = torch.zeros(b, za.shape[2], device=self.device)
            audio_in, audio_target = za, za
            audio_mask = torch.zeros_like(t, dtype=torch.bool)
        text, text_mask = self._encode_step_text(batch)
        p_drop = self.curriculum.caption_dropout
        if self.in_image_warm_up() and self.hparams.get("image_first_caption_dropout") is not None:
            p_drop = self.hparams.image_first_caption_dropout
        drop_text = torch.rand(b, device=self.device) < p_drop
        pred_v, pred_a = self.dit(
            add_noise(zv, noise_v, t),
            audio_in,
            t,
            t_audio,
            text,
            text_mask,
            video_frame_seconds=self.frame_seconds(batch["fps"], b),
            audio_frame_seconds=1.0 / self.hparams.audio_latent_rate,
            drop_text=drop_text,
        )
        # Without image_audio the audio head joins the loss with nothing generated (0, yet in the graph: DDP
        # without find_unused_parameters needs a gradient for every parameter); its terms are not reported.
        f = self.hparams.flow
        out = flow_loss(
            {"video": pred_v, "audio": pred_a},
            {"video": velocity_target(zv, noise_v), "audio": audio_target},
            {"video": self._image_loss_mask(batch, b), "audio": audio_mask},
            weights={"audio": f["audio_weight"]} if sound else None,
        )
        return out if sound else {k: v for k, v in out.items() if not k.endswith("_audio")}

    def _has_audio(self, batch: dict, b: int, default: bool) -> Tensor:
        """(B,) bool: the clips that have sound (``batch["has_audio"]``, else ``default`` for every clip)."""
        return torch.as_tensor(batch.get("has_audio", [default] * b), device=self.device).bool()

    def _image_loss_mask(self, batch: dict, b: int) -> Tensor:
        """(B, 1) bool: the clips whose first frame counts in a text-to-image step's loss: all of them, but
        during ``image_first_steps`` with ``image_first_max_objects`` set, only those whose ``meta`` lists at
        most that many ``objects`` (or has no such key)."""
        limit = self.hparams.get("image_first_max_objects")
        keep = [True] * b
        if limit is not None and self.in_image_warm_up():
            metas = batch.get("meta") or [{}] * b
            keep = [len(m.get("objects", ())) <= limit for m in metas]
        return torch.tensor(keep, dtype=torch.bool, device=self.device)[:, None]

    def text_align_pairs(self, batch: dict) -> tuple[list[str], list[str]]:
        """(training captions, their partners): each clip's caption and another form of it (``text_align``),
        for the clips that have one."""
        _, ours, theirs = self._align_pairs(batch)
        return ours, theirs

    def _align_pairs(self, batch: dict) -> tuple[list[int], list[str], list[str]]:
        form = self.hparams.text_align["form"]
        metas = batch.get("meta") or [{}] * len(batch["caption"])
        index, ours, theirs = [], [], []
        for i, (caption, meta) in enumerate(zip(batch["caption"], metas, strict=True)):
            if meta.get("caption_form", "txt") == form:
                other = meta.get("caption_txt")
            else:
                other = (meta.get("captions") or {}).get(form)
            if isinstance(other, str) and other.strip() and other.strip() != caption:
                index.append(i)
                ours.append(caption)
                theirs.append(other.strip())
        return index, ours, theirs

    def text_align_loss(
        self, batch: dict, step_text: tuple[list[str], Tensor, Tensor] | None = None
    ) -> Tensor | None:
        """The ``text_align`` InfoNCE on this batch, or None (off, or fewer than 2 clips with a pair).
        ``step_text``: the (captions, encodings, mask) a training step just made of this batch's captions
        (``training_step`` passes its own): those encodings are used (the same values and graph) and only the
        partners are encoded again."""
        cfg = self.hparams.text_align
        if float(cfg["weight"]) <= 0:
            return None
        index, ours, theirs = self._align_pairs(batch)
        if len(ours) < 2:
            return None
        step = step_text
        if step is None or step[0] != list(batch["caption"]):
            return alignment_loss(self.encode_text, ours, theirs, float(cfg["temperature"]))
        rows = torch.as_tensor(index, device=step[1].device)
        mine = pool(step[1][rows], step[2][rows])
        return info_nce(mine, pooled(self.encode_text, theirs), float(cfg["temperature"]))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.compute_loss(batch)
        align = self.text_align_loss(self.step_batch(batch), self._step_text)  # the clips the step trained on
        self._step_text = None
        if align is not None:
            out["loss_text_align"] = align.detach()
            out["loss"] = out["loss"] + float(self.hparams.text_align["weight"]) * align
        b = len(batch["caption"])
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in out.items() if k.startswith("loss_")}, batch_size=b)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.compute_loss(batch)
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=len(batch["caption"]), sync_dist=True)

    def configure_optimizers(self) -> dict:
        params = [(f"dit.{n}", p) for n, p in self.dit.named_parameters()]
        if getattr(self.text_encoder, "trainable", False):
            params += [(f"text_encoder.{n}", p) for n, p in self.text_encoder.named_parameters()]
        return build_optimizer(params, self.optim_cfg)

    def train(self, mode: bool = True) -> AVDiTModule:
        super().train(mode)
        for vae in (self.video_vae, self.audio_vae):  # frozen VAEs stay in eval mode
            if vae is not None:
                vae.eval()
        return self
