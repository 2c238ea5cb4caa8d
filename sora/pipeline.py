"""Load a trained AV-DiT (export folder or Lightning checkpoint) and generate clips with sound.

This is the one generation code path: ``sample.py``, the eval suite, the validation-sample callback and the
quickstart all call :meth:`AVPipeline.generate`. Every mode is expressed with per-token timesteps
(see :mod:`sora.diffusion.sampler`):

=============  ============================================================================================
``t2av``       text -> video + audio
``i2v``        an image is the clean first latent frame
``extend``     the source clip, followed by ``seconds`` of new frames and sound (rolling windows, below)
``v2a``        a given (silent) video is clean; audio is generated
``a2v``        given audio is clean; video is generated
``remix``      SDEdit: the source is noised to ``strength`` and denoised with the new prompt
``storyboard`` shots ``{prompt, seconds}`` in sequence, each continuing the previous one (rolling windows)
=============  ============================================================================================

Longer clips than the model's window (``extend``, ``storyboard``): the clip is one sequence of latent frames
(video, and audio at its own rate) grown in rolling windows of the trained length
(:func:`sora.diffusion.sampler.rolling_windows`). Each window holds the last ``context_latents`` latent frames
of what exists so far, and the audio latents of the same seconds, clean (timestep 0, never changed by the
sampler) and generates the rest; the windows are stitched in latent space and the whole clip is decoded once
(the causal video VAE decodes in chunks with its feature cache), so there are no seams.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sora import media
from sora.checkpoint import (
    HF_TEXT_ENCODER,
    build_module,
    checkpoint_state,
    config_hash,
    load_network,
    load_torch_checkpoint,
    refuse_remote,
)
from sora.diffusion.flow import add_noise, audio_prefix_mask, token_count_shift
from sora.diffusion.sampler import Condition, Window, guided, rolling_windows, sample, sigma_schedule
from sora.export_format import CAST_NETWORKS, parse_dtype, read_manifest, training_summary
from sora.precision import resolve_autocast_dtype

MODES = ("t2av", "i2v", "extend", "v2a", "a2v", "remix", "storyboard")
NETWORKS = ("dit", "text_encoder", "video_vae", "audio_vae")
DEFAULT_SAMPLING = {
    "fps": 24.0,
    "num_frames": 17,
    "height": 64,
    "width": 64,
    "sample_rate": 16000,
    "max_num_frames": 65,
    "max_size": 512,
}


@dataclass
class GenerationRequest:
    """What to generate. Unset sizes default to what the model was trained on."""

    prompt: str
    mode: str = "t2av"
    seed: int = 0
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    steps: int = 30
    solver: str = "euler"
    shift: float | None = None  # None: the token-count rule used in training
    video_guidance: float = 5.0
    audio_guidance: float = 3.0
    image: str | None = None  # i2v
    video: str | None = None  # extend / v2a / remix source clip
    audio: str | None = None  # a2v source (wav, mp3, or any file with an audio track)
    strength: float = 0.7  # remix
    seconds: float | None = None  # extend: seconds added after the source (None: one window)
    context_latents: int | None = None  # extend / storyboard: latent frames kept clean (None: half a window)
    shots: list[dict] = field(default_factory=list)  # storyboard: [{"prompt", "seconds"}]


@dataclass
class GeneratedClip:
    """A generated clip: ``video`` uint8 (T, H, W, 3), ``audio`` float32 (1, S)."""

    video: np.ndarray
    audio: np.ndarray | None
    fps: float
    sample_rate: int
    request: GenerationRequest
    latents: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class _Setup:
    """One request's checked sizes and its seeded starting noise (shared by every mode)."""

    num_frames: int
    height: int
    width: int
    fps: float
    sample_rate: int
    num_samples: int
    noise_v: Tensor  # (1, C, t, h, w)
    noise_a: Tensor | None  # (1, C, L); None without an audio VAE


@dataclass
class _Plan:
    """What a mode hands the sampler: starting latents, clean conditions, and what comes back as given."""

    video: Tensor  # (1, C, t, h, w) at time ``start``
    audio: Tensor | None  # (1, C, L)
    video_cond: Condition | None = None
    audio_cond: Condition | None = None
    start: float = 1.0  # the time the ODE starts from (remix: strength)
    keep_video: np.ndarray | None = None  # returned instead of the decoded video (v2a, remix at strength 0)
    keep_audio: np.ndarray | None = None  # returned instead of the decoded audio (a2v, remix at strength 0)
    run_sampler: bool = True  # False: the starting latents are the answer (remix at strength 0)


@dataclass
class _Running:
    """A clip grown window by window (extend, storyboard): its latents so far, and what is returned as
    given."""

    video: Tensor  # (1, C, n, h, w) normalised latents of the clip so far (n may be 0)
    audio: Tensor | None  # (1, C, L) audio latents of the same seconds; None until there is sound
    lead_video: (
        np.ndarray
    )  # uint8 (k, H, W, 3): source frames before the first encodable one, returned as given
    lead_audio: np.ndarray | None  # (1, S) their sound
    silent_latents: int = 0  # leading audio latents that are placeholders (a source without sound): silence


def _resize_video(frames: Tensor, height: int, width: int) -> Tensor:
    """(3, T, H, W) -> (3, T, height, width): scale to cover, then centre-crop (keeps the aspect ratio)."""
    _, _, h, w = frames.shape
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = F.interpolate(
        frames.transpose(0, 1), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[:, :, top : top + height, left : left + width].transpose(0, 1).clamp(-1, 1)


class AVPipeline:
    """The networks plus the sampling defaults of a trained model (``sampling``: fps, num_frames, size)."""

    def __init__(
        self,
        *,
        dit: nn.Module,
        text_encoder: nn.Module,
        video_vae: nn.Module,
        audio_vae: nn.Module | None,
        configs: dict[str, dict],
        sampling: dict | None = None,
        flow: dict | None = None,
        device: str | torch.device = "cpu",
        autocast_dtype: torch.dtype | str | None = "auto",
    ) -> None:
        self.device = torch.device(device)
        self.dit, self.text_encoder = dit.to(self.device).eval(), text_encoder.to(self.device).eval()
        self.video_vae = video_vae.to(self.device).eval()
        self.audio_vae = audio_vae.to(self.device).eval() if audio_vae is not None else None
        self.configs = configs
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        self.flow = flow or {}
        # "auto": the DiT's own dtype when it was cast (dtype="bf16": autocast must match it), else bf16 where
        # this device computes it faster than fp32 (sora.precision), else no autocast
        dit_dtype = next(self.dit.parameters()).dtype
        if autocast_dtype == "auto" and dit_dtype != torch.float32:
            autocast_dtype = dit_dtype
        self.autocast_dtype = resolve_autocast_dtype(autocast_dtype, self.device)
        self.config_hash = config_hash(configs)
        self.training_info: dict = {}  # steps and data of the checkpoint it came from (for the model card)

    # ---- loading -------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        use_ema: bool = True,
        text_encoder_path: str | Path | None = None,
        verify_text_encoder: bool = True,
        **kwargs: Any,
    ) -> AVPipeline:
        """Load an export folder (``config.json`` + safetensors), a Lightning ``.ckpt`` of the DiT stage, or a
        sharded checkpoint folder; never a URL.

        Networks are built with their parameters on the meta device and every tensor is checked (name, shape,
        dtype) before it is read straight into them on ``device``: one copy in memory. ``dtype`` (``"bf16"``,
        ``torch.float16``, ...) casts the DiT and a trained text encoder, the bulk of the parameters; the VAEs
        stay float32 (small, and decoded in full precision). ``text_encoder_path``: the folder of a Hugging
        Face text encoder an export references instead of bundling (or to replace the recorded one);
        its weights must match the fingerprint in ``config.json`` unless ``verify_text_encoder=False``.
        ``use_ema`` picks EMA or raw weights of a checkpoint (an export holds the weights chosen when it was
        written). Other keyword arguments go to the constructor (``autocast_dtype``).
        """
        from sora.checkpoint_sharded import is_sharded_checkpoint

        refuse_remote(path, "model")
        path = Path(path)
        common = dict(dtype=dtype, device=device, text_encoder_path=text_encoder_path, **kwargs)
        if path.is_dir() and not is_sharded_checkpoint(path):
            return cls.from_export(path, verify_text_encoder=verify_text_encoder, **common)
        return cls.from_checkpoint(path, use_ema=use_ema, **common)

    load = from_pretrained  # the name used before from_pretrained existed

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        use_ema: bool = True,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        text_encoder_path: str | Path | None = None,
        **kwargs: Any,
    ) -> AVPipeline:
        """A DiT-stage Lightning ``.ckpt`` (memory-mapped) or sharded checkpoint folder (consolidated)."""
        ckpt = load_torch_checkpoint(path)
        hp = ckpt.get("hyper_parameters") or {}
        if not hp.get("dit") or not hp.get("video_vae"):
            raise ValueError(
                f"{path} is not an AV-DiT training checkpoint with a video VAE (hyper-parameters: "
                f"{sorted(hp)})"
            )
        dtype = parse_dtype(dtype)
        nets: dict[str, nn.Module | None] = {}
        for name in NETWORKS:
            config = hp.get(name)
            if not config:
                nets[name] = None
            elif config.get("_target_") == HF_TEXT_ENCODER:
                given = {"path": str(text_encoder_path)} if text_encoder_path else {}
                nets[name] = build_module(config, **given)
            else:
                state = checkpoint_state(ckpt, name, use_ema=use_ema)
                cast = dtype if name in CAST_NETWORKS else None
                nets[name] = load_network(config, state, dtype=cast, device=device, where=f"{path}: {name}")
        configs = {n: hp[n] for n in NETWORKS if hp.get(n)}
        sampling, flow = hp.get("sampling"), hp.get("flow")
        pipe = cls(**nets, configs=configs, sampling=sampling, flow=flow, device=device, **kwargs)
        pipe.training_info = training_summary(ckpt)
        return pipe

    @classmethod
    def from_export(
        cls,
        folder: str | Path,
        *,
        use_ema: bool = True,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        text_encoder_path: str | Path | None = None,
        verify_text_encoder: bool = True,
        **kwargs: Any,
    ) -> AVPipeline:
        """Load an export folder (see :meth:`from_pretrained`; ``use_ema`` is accepted for symmetry)."""
        from sora.text_encoder_files import load_text_encoder

        folder = Path(folder)
        manifest = read_manifest(folder)
        dtype = parse_dtype(dtype)
        stored = manifest.get("dtypes") or {}
        nets: dict[str, nn.Module | None] = {name: None for name in NETWORKS}
        for name, config in manifest["networks"].items():
            if config.get("_target_") == HF_TEXT_ENCODER:
                source = manifest.get("text_encoder_source")
                nets[name] = load_text_encoder(folder, config, source, text_encoder_path, verify_text_encoder)
                continue
            cast = dtype if name in CAST_NETWORKS else None
            nets[name] = load_network(
                config,
                folder / f"{name}.safetensors",
                dtype=cast,
                device=device,
                stored_dtype=parse_dtype(stored.get(name)),
            )
        pipe = cls(
            **nets,
            configs=manifest["networks"],
            sampling=manifest.get("sampling"),
            flow=manifest.get("flow"),
            device=device,
            **kwargs,
        )
        pipe.config_hash = manifest.get("model_config_hash") or pipe.config_hash
        pipe.training_info = manifest.get("training") or {}
        return pipe

    @classmethod
    def from_module(cls, module: nn.Module, **kwargs: Any) -> AVPipeline:
        """Wrap a live :class:`~sora.training.dit_module.AVDiTModule` (weights shared, not copied)."""
        hp = module.hparams
        configs = {n: hp[n] for n in NETWORKS if hp.get(n)}
        return cls(
            dit=module.dit,
            text_encoder=module.text_encoder,
            video_vae=module.video_vae,
            audio_vae=module.audio_vae,
            configs=configs,
            sampling=hp.get("sampling"),
            flow=hp.get("flow"),
            device=module.device,
            **kwargs,
        )

    # ---- inputs --------------------------------------------------------------------------------------------

    def _check_request(self, req: GenerationRequest) -> tuple[int, int, int, float]:
        if req.mode not in MODES:
            raise ValueError(f"unknown mode {req.mode!r}; one of {MODES}")
        s = self.sampling
        t = int(req.num_frames or s["num_frames"])
        h, w = int(req.height or s["height"]), int(req.width or s["width"])
        fps = float(req.fps or s["fps"])
        tc = self.video_vae.temporal_compression
        mult = self.video_vae.spatial_compression * self.dit.patch_size[1]
        if (t - 1) % tc or t < 1:
            raise ValueError(f"num_frames must be 1 + {tc}k for this model, got {t}")
        if t > s["max_num_frames"]:
            raise ValueError(
                f"num_frames={t} exceeds what the model was trained for (max_num_frames="
                f"{s['max_num_frames']})"
            )
        if h % mult or w % mult or max(h, w) > s["max_size"]:
            raise ValueError(
                f"height/width must be multiples of {mult} and at most {s['max_size']}, got {h}x{w}"
            )
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if req.steps < 1:
            raise ValueError(f"steps must be >= 1, got {req.steps}")
        if req.seconds is not None and req.mode != "extend":
            raise ValueError(f"seconds is for mode=extend (storyboard shots have their own), not {req.mode}")
        if req.context_latents is not None and req.mode not in ROLLING:
            raise ValueError(f"context_latents is for mode=extend or storyboard, not {req.mode}")
        return t, h, w, fps

    def _load_video(
        self, path: str, t: int | None, h: int, w: int
    ) -> tuple[Tensor, np.ndarray | None, float]:
        """(3, T, h, w) in [-1, 1] (the first ``t`` frames, or all when None), its audio (1, S) at 16 kHz,
        fps."""
        clip = media.read_media(path)
        frames = clip.video if t is None else clip.video[:t]
        x = _resize_video(media.video_to_tensor(frames), h, w)
        audio = None
        if clip.audio is not None:
            audio = media.to_mono(
                media.resample_audio(clip.audio, clip.sample_rate, self.sampling["sample_rate"])
            )
            audio = audio.numpy()
        return x, audio, clip.fps

    def _load_image(self, path: str, h: int, w: int) -> Tensor:
        from PIL import Image

        img = np.asarray(Image.open(path).convert("RGB"))
        return _resize_video(media.video_to_tensor(img[None]), h, w)  # (3, 1, h, w)

    def _load_audio(self, path: str, seconds: float) -> Tensor:
        audio, sr = media.read_audio(path, duration=seconds)
        if audio is None:
            raise ValueError(f"{path} has no audio stream")
        return media.to_mono(media.resample_audio(audio, sr, self.sampling["sample_rate"]))  # (1, S)

    # ---- latents -------------------------------------------------------------------------------------------

    def encode_video(self, x: Tensor) -> Tensor:
        """(3, T, H, W) -> normalised latents (1, C, t, h, w)."""
        return self.video_vae.normalize_latents(self.video_vae.encode(x[None].to(self.device)).mode())

    def encode_audio(self, audio: Tensor, num_samples: int) -> Tensor:
        a = audio[..., :num_samples]
        a = F.pad(a, (0, num_samples - a.shape[-1]))[None].to(self.device)  # (1, 1, S)
        return self.audio_vae.normalize_latents(self.audio_vae.encode(a).mode())

    def decode(self, zv: Tensor, za: Tensor | None, num_samples: int) -> tuple[np.ndarray, np.ndarray | None]:
        v = self.video_vae.decode_chunked(self.video_vae.denormalize_latents(zv.float()), chunk_latents=4)
        video = media.tensor_to_video(v[0])
        audio = None
        if za is not None:
            a = self.audio_vae.decode_audio(
                self.audio_vae.denormalize_latents(za.float()), num_samples=num_samples
            )
            audio = a[0].clamp(-1, 1).cpu().numpy().astype(np.float32)
        return video, audio

    @torch.no_grad()
    def round_trip(
        self, video: np.ndarray, audio: np.ndarray | None, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A clip through the VAEs and back, what the DiT's latents can at best decode to: ``video`` (T, H, W,
        3) uint8 (T = 1 + 4k), ``audio`` (C, S) at ``sample_rate`` or None -> the decoded (T, H, W, 3) uint8
        and (1, S') float audio at the model's rate (None without audio or an audio VAE)."""
        zv = self.encode_video(media.video_to_tensor(video))
        za, num_samples = None, 0
        if audio is not None and self.audio_vae is not None:
            rate = self.sampling["sample_rate"]
            mono = media.to_mono(media.resample_audio(audio, sample_rate, rate))  # (1, S')
            num_samples = round(video.shape[0] / self.sampling["fps"] * rate)
            za = self.encode_audio(mono, num_samples)
        return self.decode(zv, za, num_samples)

    # ---- generation ----------------------------------------------------------------------------------------

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def generate(
        self,
        req: GenerationRequest,
        progress: Callable[[int], None] | None = None,
        on_plan: Callable[[int], None] | None = None,
    ) -> GeneratedClip:
        """Generate one clip for ``req`` (deterministic for a given seed on a given device).

        Each mode is one small ``_plan_<mode>`` function (table ``PLANNERS``) that turns the request into a
        :class:`_Plan`: the sampler's starting latents, the clean conditions, and what is returned as given.
        ``progress(i)`` is called after every sampler step; ``on_plan(n)`` once, before the first, with the
        number of those calls to come (``steps`` times the rolling windows of extend and storyboard, which
        depend on the source's length; 0 for a remix at strength 0).
        """
        if req.mode in ROLLING:
            return self._generate_rolling(req, progress, on_plan)
        setup = self._setup(req)
        plan = PLANNERS[req.mode](self, req, setup)
        if on_plan is not None:
            on_plan(req.steps if plan.run_sampler else 0)
        if plan.run_sampler:
            zv, za = self._denoise(
                req, plan.video, plan.audio, plan.video_cond, plan.audio_cond, setup.fps, plan.start, progress
            )
        else:
            zv, za = plan.video, plan.audio
        video, audio = self.decode(zv, za, setup.num_samples)
        return GeneratedClip(
            video=plan.keep_video if plan.keep_video is not None else video,
            audio=plan.keep_audio if plan.keep_audio is not None else audio,
            fps=setup.fps,
            sample_rate=setup.sample_rate,
            request=req,
            latents={"video": zv.cpu(), **({"audio": za.cpu()} if za is not None else {})},
        )

    def _setup(self, req: GenerationRequest) -> _Setup:
        """Checked sizes and the seeded starting noise shared by every mode."""
        t, h, w, fps = self._check_request(req)
        sr = int(self.sampling["sample_rate"])
        num_samples = round(t / fps * sr)
        gen = torch.Generator(device="cpu").manual_seed(int(req.seed))
        lt, lh, lw = self.video_vae.latent_shape(t, h, w)
        noise_v = torch.randn((1, self.dit.video_channels, lt, lh, lw), generator=gen).to(self.device)
        noise_a = None
        if self.audio_vae is not None:
            la = self.audio_vae.latent_length(num_samples)
            noise_a = torch.randn((1, self.dit.audio_channels, la), generator=gen).to(self.device)
        return _Setup(t, h, w, fps, sr, num_samples, noise_v, noise_a)

    def _frame_mask(self, num_frames: int, num_given: int) -> Tensor:
        """(1, num_frames) bool: the first ``num_given`` latent frames are given."""
        mask = torch.zeros(1, num_frames, dtype=torch.bool, device=self.device)
        mask[:, :num_given] = True
        return mask

    def _prefix_condition(self, z: Tensor, like: Tensor) -> Condition:
        """``z`` (1, C, k, h, w) as the clean first ``k`` latent frames of a latent shaped like ``like``."""
        clean = torch.zeros_like(like)
        clean[:, :, : z.shape[2]] = z
        return Condition(clean, self._frame_mask(like.shape[2], z.shape[2]))

    def _plan_t2av(self, req: GenerationRequest, s: _Setup) -> _Plan:
        return _Plan(s.noise_v, s.noise_a)

    def _plan_i2v(self, req: GenerationRequest, s: _Setup) -> _Plan:
        if not req.image:
            raise ValueError("mode=i2v needs image=PATH")
        z0 = self.encode_video(self._load_image(req.image, s.height, s.width))  # (1, C, 1, lh, lw)
        return _Plan(s.noise_v, s.noise_a, video_cond=self._prefix_condition(z0, s.noise_v))

    def _load_source(self, req: GenerationRequest, s: _Setup) -> tuple[Tensor, np.ndarray | None]:
        """v2a / remix: the first ``num_frames`` frames of ``req.video`` (3, T, H, W) and its audio (1, S)."""
        if not req.video:
            raise ValueError(f"mode={req.mode} needs video=PATH")
        src, src_audio, _ = self._load_video(req.video, s.num_frames, s.height, s.width)
        if src.shape[1] < s.num_frames:
            raise ValueError(f"{req.video} has {src.shape[1]} frames, fewer than num_frames={s.num_frames}")
        return src, src_audio

    def _plan_v2a(self, req: GenerationRequest, s: _Setup) -> _Plan:
        src, _ = self._load_source(req, s)
        zv = self.encode_video(src)
        given = torch.ones(1, zv.shape[2], dtype=torch.bool, device=self.device)
        return _Plan(
            s.noise_v, s.noise_a, video_cond=Condition(zv, given), keep_video=media.tensor_to_video(src)
        )

    def _plan_remix(self, req: GenerationRequest, s: _Setup) -> _Plan:
        """SDEdit: the source noised to ``strength`` is the starting point; strength 0 returns the source."""
        src, src_audio = self._load_source(req, s)
        zv = self.encode_video(src)
        if not 0.0 <= req.strength <= 1.0:
            raise ValueError(f"remix strength must be in [0, 1], got {req.strength}")
        za = None
        if s.noise_a is not None and src_audio is not None:
            za = self.encode_audio(torch.from_numpy(src_audio), s.num_samples)
        ts = torch.tensor([max(req.strength, 1e-6)], device=self.device)
        plan = _Plan(add_noise(zv, s.noise_v, ts), s.noise_a, start=req.strength)
        if za is not None:
            plan.audio = add_noise(za, s.noise_a, ts)
        if req.strength == 0.0:  # nothing to regenerate: the source itself
            plan.run_sampler = False
            plan.keep_video = media.tensor_to_video(src)
            plan.keep_audio = src_audio[:, : s.num_samples] if src_audio is not None else None
        return plan

    def _plan_a2v(self, req: GenerationRequest, s: _Setup) -> _Plan:
        if not req.audio:
            raise ValueError("mode=a2v needs audio=PATH")
        if s.noise_a is None:
            raise ValueError("mode=a2v needs a model with an audio VAE")
        src_audio = self._load_audio(req.audio, s.num_frames / s.fps)
        za = self.encode_audio(src_audio, s.num_samples)
        given = torch.ones(1, za.shape[2], dtype=torch.bool, device=self.device)
        keep = F.pad(src_audio, (0, max(0, s.num_samples - src_audio.shape[-1])))[:, : s.num_samples]
        return _Plan(s.noise_v, s.noise_a, audio_cond=Condition(za, given), keep_audio=keep.numpy())

    def _denoise(
        self,
        req: GenerationRequest,
        xv: Tensor,
        xa: Tensor | None,
        video_cond: Condition | None,
        audio_cond: Condition | None,
        fps: float,
        start: float,
        progress: Callable[[int], None] | None,
    ) -> tuple[Tensor, Tensor | None]:
        text, text_mask = self.text_encoder.encode([req.prompt])
        text, text_mask = text.to(self.device), text_mask.to(self.device)
        v_sec = self.video_vae.temporal_compression / fps
        a_rate = getattr(self.audio_vae, "latent_rate", 25)

        def model_call(v, a, tv, ta, drop):
            n = v.shape[0]
            with self._autocast():
                pv, pa = self.dit(
                    v,
                    a,
                    tv,
                    ta,
                    text.expand(n, -1, -1),
                    text_mask.expand(n, -1),
                    video_frame_seconds=v_sec,
                    audio_frame_seconds=1.0 / a_rate,
                    drop_text=drop,
                )
            return pv.float(), (pa.float() if pa is not None else None)

        shift = req.shift
        if shift is None:
            n_v, n_a = self.dit.num_tokens(tuple(xv.shape), tuple(xa.shape) if xa is not None else None)
            f = self.flow
            if f.get("shift", "tokens") == "tokens":
                shift = token_count_shift(
                    n_v + n_a,
                    f.get("base_tokens", 256),
                    f.get("base_shift", 0.5),
                    f.get("max_shift", 1.15),
                    f.get("max_tokens", 4096),
                )
            else:
                shift = float(f["shift"])
        sigmas = sigma_schedule(req.steps, shift=shift, start=start, device=self.device)
        denoise = guided(model_call, video_scale=req.video_guidance, audio_scale=req.audio_guidance)
        return sample(
            denoise,
            xv,
            xa,
            sigmas,
            video_cond=video_cond,
            audio_cond=audio_cond,
            solver=req.solver,
            progress=progress,
        )

    # ---- rolling windows (extend, storyboard) -------------------------------------------------------------

    def _window_and_context(self, req: GenerationRequest, s: _Setup) -> tuple[int, int]:
        """(window, context) in latent frames: the request's window (default: the trained ``num_frames``) and
        the clean context each window keeps (default: half the window)."""
        window = self.video_vae.latent_shape(s.num_frames, s.height, s.width)[0]
        if window < 2:
            raise ValueError(
                f"rolling windows need num_frames of at least 2 latent frames, got {s.num_frames}"
            )
        context = req.context_latents if req.context_latents is not None else window // 2
        if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context < window:
            raise ValueError(
                f"context_latents must be an integer in [1, {window - 1}] (the window is {window} latent "
                f"frames), got {context!r}"
            )
        return window, context

    def _new_latents(self, seconds: Any, fps: float, what: str) -> int:
        """Latent frames that hold at least ``seconds`` of new video (each adds ``temporal_compression``
        frames)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"{what} must be a number of seconds > 0, got {seconds!r}")
        return max(1, int(np.ceil(seconds * fps / self.video_vae.temporal_compression - 1e-9)))

    def _start_extend(self, req: GenerationRequest, s: _Setup) -> tuple[_Running, list[tuple[str, int]]]:
        """The source's latents (all of it: it is returned in front of the new frames) and one segment of
        ``seconds`` (default: one window) with the request's prompt."""
        if not req.video:
            raise ValueError("mode=extend needs video=PATH")
        tc = self.video_vae.temporal_compression
        src, src_audio, _ = self._load_video(req.video, None, s.height, s.width)  # (3, T, h, w)
        lead = (src.shape[1] - 1) % tc  # frames before the first of the last 1 + tc k (returned as given)
        zv = self.encode_video(src[:, lead:])  # (1, C, n, lh, lw)
        lead_samples = round(lead / s.fps * s.sample_rate)
        run = _Running(zv, None, media.tensor_to_video(src[:, :lead]), None)
        if self.audio_vae is not None:
            if src_audio is None:  # no sound to continue: silence under the source, generated from the window
                run.lead_audio = np.zeros((1, lead_samples), np.float32)
            else:
                run.lead_audio = src_audio[:, :lead_samples]
                samples = round((src.shape[1] - lead) / s.fps * s.sample_rate)
                run.audio = self.encode_audio(torch.from_numpy(src_audio)[..., lead_samples:], samples)
        window, context = self._window_and_context(req, s)
        if req.seconds is None:
            new = window - min(context, zv.shape[2])
        else:
            new = self._new_latents(req.seconds, s.fps, "seconds")
        return run, [(req.prompt, new)]

    def _start_storyboard(self, req: GenerationRequest, s: _Setup) -> tuple[_Running, list[tuple[str, int]]]:
        """An empty clip and one segment per shot: the first shot adds its first frame too."""
        if not req.shots:
            raise ValueError("mode=storyboard needs shots=[{prompt, seconds}, ...]")
        lh, lw = self.video_vae.latent_shape(1, s.height, s.width)[1:]
        empty = torch.zeros((1, self.dit.video_channels, 0, lh, lw), device=self.device)
        silence = np.zeros((1, 0), np.float32) if self.audio_vae is not None else None
        segments = []
        for i, shot in enumerate(req.shots):
            if not isinstance(shot, dict) or not isinstance(shot.get("prompt"), str):
                raise ValueError(f"shots[{i}] must be {{prompt: str, seconds: number}}, got {shot!r}")
            new = self._new_latents(shot.get("seconds"), s.fps, f"shots[{i}].seconds")
            segments.append((str(shot["prompt"]), new + (i == 0)))
        return _Running(empty, None, np.zeros((0, s.height, s.width, 3), np.uint8), silence), segments

    def _generate_rolling(
        self,
        req: GenerationRequest,
        progress: Callable[[int], None] | None,
        on_plan: Callable[[int], None] | None = None,
    ) -> GeneratedClip:
        """``extend`` / ``storyboard``: grow one latent clip in rolling windows, decode it once."""
        s = self._setup(req)
        run, segments = ROLLING[req.mode](self, req, s)
        window, context = self._window_and_context(req, s)
        planned, length = [], run.video.shape[2]  # every segment's windows, known before the first runs
        for prompt, new in segments:
            planned.append((prompt, rolling_windows(length, new, window, context)))
            length += new
        if on_plan is not None:
            on_plan(req.steps * sum(len(ws) for _, ws in planned))
        gen = torch.Generator(device="cpu").manual_seed(int(req.seed))
        for prompt, windows in planned:
            sub = replace(req, prompt=prompt)
            for w in windows:
                self._roll_window(sub, s, run, w, gen, progress)
        tc = self.video_vae.temporal_compression
        num_samples = round((1 + tc * (run.video.shape[2] - 1)) / s.fps * s.sample_rate)
        za = None
        if run.audio is not None:
            za = run.audio[:, :, : self.audio_vae.latent_length(num_samples)]
        video, audio = self.decode(run.video, za, num_samples)
        if audio is not None:
            audio[:, : run.silent_latents * self.audio_vae.samples_per_latent] = 0.0
            audio = np.concatenate([run.lead_audio, audio], axis=1)
        return GeneratedClip(
            video=np.concatenate([run.lead_video, video]),
            audio=audio,
            fps=s.fps,
            sample_rate=s.sample_rate,
            request=req,
            latents={"video": run.video.cpu(), **({"audio": za.cpu()} if za is not None else {})},
        )

    def _roll_window(
        self,
        req: GenerationRequest,
        s: _Setup,
        run: _Running,
        w: Window,
        gen: torch.Generator,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Generate one window: its first ``w.context`` latent frames (and the audio latents of their seconds)
        are the clip's own, held clean; the rest is appended to ``run``."""
        tc = self.video_vae.temporal_compression
        _, c, _, lh, lw = run.video.shape
        xv = torch.randn((1, c, w.length, lh, lw), generator=gen).to(self.device)
        video_cond = None
        if w.context:
            video_cond = self._prefix_condition(run.video[:, :, w.start : w.start + w.context], xv)
        xa = audio_cond = None
        known, first = 0, 0
        if self.audio_vae is not None:
            v_sec, a_sec = tc / s.fps, 1.0 / getattr(self.audio_vae, "latent_rate", 25)
            first = round(w.start * v_sec / a_sec)  # the audio latent at the window's first video latent
            end = round((1 + tc * (w.start + w.length - 1)) / s.fps * s.sample_rate)
            length = self.audio_vae.latent_length(end) - first
            xa = torch.randn((1, self.dit.audio_channels, length), generator=gen).to(self.device)
            if run.audio is not None and w.context:
                # the same rule as training's extend: audio latents that start inside the clean video prefix
                mask = audio_prefix_mask(
                    torch.tensor([w.context], device=self.device), length, v_sec, a_sec, tc
                )
                known = min(int(mask.sum()), run.audio.shape[2] - first)
                mask[:, known:] = False
                clean = torch.zeros_like(xa)
                clean[:, :, :known] = run.audio[:, :, first : first + known]
                audio_cond = Condition(clean, mask)
        zv, za = self._denoise(req, xv, xa, video_cond, audio_cond, s.fps, 1.0, progress)
        run.video = torch.cat([run.video, zv[:, :, w.context :]], dim=2)
        if za is not None:
            if run.audio is None:  # the first sound: what comes before the window is a placeholder
                run.audio = torch.zeros((1, za.shape[1], first), device=self.device)
                run.silent_latents = first
            assert run.audio.shape[2] >= first + known, "the clip's audio ends before the window's context"
            run.audio = torch.cat([run.audio[:, :, : first + known], za[:, :, known:]], dim=2)


# One planner per single-window mode, and for the rolling modes (longer than a window) the clip they start
# from and their segments of (prompt, new latent frames) (see the module docstring).
PLANNERS: dict[str, Callable[[AVPipeline, GenerationRequest, _Setup], _Plan]] = {
    "t2av": AVPipeline._plan_t2av,
    "i2v": AVPipeline._plan_i2v,
    "v2a": AVPipeline._plan_v2a,
    "a2v": AVPipeline._plan_a2v,
    "remix": AVPipeline._plan_remix,
}
ROLLING: dict[
    str, Callable[[AVPipeline, GenerationRequest, _Setup], tuple[_Running, list[tuple[str, int]]]]
] = {
    "extend": AVPipeline._start_extend,
    "storyboard": AVPipeline._start_storyboard,
}


def save_clip(
    clip: GeneratedClip,
    path: str | Path,
    *,
    config_hash: str,
    watermark: bool = True,
    watermark_text: str = "AI",
    watermark_opacity: float = 0.6,
    invisible_watermark: bool = True,
    signing_key: Any = None,
    model_hash: str | None = None,
    save_latents: bool = False,
    user_prompt: str | None = None,
) -> Path:
    """Write ``clip`` as H.264 + AAC mp4 with its provenance record (and, with ``save_latents``,
    ``<path>.latents.safetensors``).

    The frames get the visible moving mark (unless ``watermark`` is off) and, with ``invisible_watermark``,
    the keyed invisible marks in the frames and the sound (:mod:`sora.watermark`). ``signing_key`` (an ed25519
    private key or its path, see ``python -m sora.safety keygen``) signs the record (:mod:`sora.provenance`)
    and keys the invisible marks; without it the record is unsigned and the marks use the public key.
    ``user_prompt``: the prompt as the user wrote it when ``clip.request.prompt`` is its upsampled form (the
    record then hashes both: ``prompt_sha256`` the user's, ``upsampled_prompt_sha256`` the one used)."""
    from sora import provenance
    from sora import watermark as wm
    from sora.checkpoint import save_safetensors

    path = Path(path)
    if signing_key is not None and not hasattr(signing_key, "sign"):
        signing_key = provenance.load_private_key(signing_key)
    video, audio = clip.video, clip.audio
    if watermark:
        video = wm.apply_watermark(video, watermark_text, watermark_opacity)
    mark_key = provenance.watermark_key(signing_key) if signing_key is not None else wm.PUBLIC_KEY_LABEL
    marks: dict[str, Any] = {"visible": bool(watermark), "invisible": bool(invisible_watermark)}
    if invisible_watermark:
        video = wm.embed_video(video, mark_key)
        marks["invisible_key"] = "signing key" if signing_key is not None else "public"
        if audio is not None and clip.sample_rate > 2 * wm.AUDIO_BAND[1]:
            audio = wm.embed_audio(audio, clip.sample_rate, mark_key)
        elif audio is not None:  # the mark's band does not fit: say so rather than fail the clip
            marks["invisible_audio"] = f"none: {clip.sample_rate} Hz is below the mark's band"
    req = clip.request
    extra: dict[str, Any] = {"watermark": marks, "steps": req.steps, "solver": req.solver}
    if user_prompt is not None:
        extra["upsampled_prompt_sha256"] = hashlib.sha256(req.prompt.encode("utf-8")).hexdigest()
    record = provenance.claims(
        prompt=req.prompt if user_prompt is None else user_prompt,
        seed=req.seed,
        config_hash=config_hash,
        mode=req.mode,
        model_hash=model_hash,
        extra=extra,
    )
    provenance.write_clip(path, video, clip.fps, audio, clip.sample_rate, record, signing_key)
    if save_latents and clip.latents:
        save_safetensors(
            {k: v.contiguous() for k, v in clip.latents.items()}, path.with_suffix(".latents.safetensors")
        )
    return path


@dataclass
class BadRequest:
    """A request that could not be read (``source`` names the file and line) and why."""

    index: int
    source: str
    reason: str
    prompt: str | None = None


def _user_text(cfg: Any, key: str) -> Any:
    """``cfg[key]`` exactly as written: user text (prompts, shots) is data, never a config interpolation
    (``prompt='${oc.env:HOME}'`` is that string, not the home folder's path)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        if key not in cfg:
            return None
        return OmegaConf.to_container(cfg, resolve=False)[key]  # a value, a list or a dict, unresolved
    return cfg.get(key)


def _validate_row(row: Any, keys: set[str]) -> str | None:
    """Why a request row is unusable, or None."""
    if not isinstance(row, dict):
        return f"a request must be a JSON object, got {type(row).__name__}"
    unknown = set(row) - keys
    if unknown:
        return f"unknown request fields {sorted(unknown)}"
    if not isinstance(row.get("prompt"), str):
        return "prompt must be a string" if "prompt" in row else "missing prompt"
    if row.get("mode", "t2av") not in MODES:
        return f"unknown mode {row.get('mode')!r}; one of {MODES}"
    for name in ("seed", "steps", "num_frames", "height", "width", "context_latents"):
        value = row.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name} must be an integer, got {value!r}"
    shots = row.get("shots", [])
    if not isinstance(shots, list) or not all(
        isinstance(s, dict) and isinstance(s.get("prompt"), str) and isinstance(s.get("seconds"), int | float)
        for s in shots
    ):
        return "shots must be a list of {prompt: str, seconds: number}"
    return None


def read_requests(cfg: Any) -> list[GenerationRequest | BadRequest]:
    """Requests from ``prompt`` / ``shots`` or ``prompts_file`` (.txt: one prompt a line; .jsonl: request
    fields), one entry per non-empty line. A line that cannot be read becomes a :class:`BadRequest` in its
    place (a bad JSON line, unknown fields or mode, a wrong type) so the others still run."""
    keys = set(GenerationRequest.__dataclass_fields__)
    base = {k: cfg[k] for k in keys if k not in ("prompt", "shots") and k in cfg and cfg[k] is not None}
    base["shots"] = [dict(s) for s in _user_text(cfg, "shots") or []]
    if cfg.get("prompts_file"):
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise ValueError(f"prompts_file {path} not found")
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        out: list[GenerationRequest | BadRequest] = []
        for i, line in enumerate(lines):
            source = f"{path}:{i + 1}"
            if path.suffix != ".jsonl":
                out.append(GenerationRequest(**{**base, "prompt": line, "seed": base.get("seed", 0) + i}))
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                out.append(BadRequest(i, source, f"not valid JSON: {err}"))
                continue
            reason = _validate_row(row, keys)
            if reason is not None:
                prompt = row.get("prompt") if isinstance(row, dict) else None
                out.append(BadRequest(i, source, reason, prompt if isinstance(prompt, str) else None))
                continue
            out.append(GenerationRequest(**{**base, "seed": base.get("seed", 0) + i, **row}))
        return out
    prompt = _user_text(cfg, "prompt")
    if prompt is None and not base["shots"]:
        raise ValueError("give prompt=..., shots=[...] (mode=storyboard) or prompts_file=PATH")
    reason = _validate_row({**base, "prompt": prompt if prompt is not None else ""}, keys)
    if prompt is not None and not isinstance(prompt, str):
        reason = f"prompt must be a string, got {type(prompt).__name__}"
    if reason is not None:
        raise ValueError(reason)
    prompt = prompt or " / ".join(s["prompt"] for s in base["shots"])
    return [GenerationRequest(**{**base, "prompt": prompt})]


def load_requests(cfg: Any) -> list[GenerationRequest]:
    """:func:`read_requests`, raising ``ValueError`` on the first unusable line (for callers that want all
    or nothing)."""
    out = []
    for entry in read_requests(cfg):
        if isinstance(entry, BadRequest):
            raise ValueError(f"{entry.source}: {entry.reason}")
        out.append(entry)
    return out


def _save_config(cfg: Any, out_dir: Path) -> None:
    """The resolved config next to the clips, with the user's text written as given (never resolved)."""
    import yaml
    from omegaconf import DictConfig, OmegaConf, open_dict

    from sora.config import save_resolved_config

    if not isinstance(cfg, DictConfig):
        save_resolved_config(OmegaConf.create(dict(cfg)), out_dir)
        return
    text = {k: _user_text(cfg, k) for k in ("prompt", "shots")}
    blank = cfg.copy()
    with open_dict(blank):
        blank.prompt, blank.shots = None, []
    resolved = {**OmegaConf.to_container(blank, resolve=True), **text}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


def build_prompt_upsampler(cfg: Any) -> Any:
    """The ``upsampler`` of a sample config (``recaption.upsample``), or None unless ``upsample=true``.
    The template upsampler's captions are ``upsampler.captions`` (shards) or, when null, the synthetic
    world's caption grammar; ``lm`` needs ``upsampler.model_path``."""
    from omegaconf import DictConfig, OmegaConf

    if not cfg.get("upsample"):
        return None
    from recaption.upsample import build_upsampler

    opts = cfg.get("upsampler") or {}
    opts = OmegaConf.to_container(opts, resolve=True) if isinstance(opts, DictConfig) else dict(opts)
    name = opts.pop("name", "template")
    opts = {k: v for k, v in opts.items() if v is not None and (name == "lm" or k != "model_path")}
    return build_upsampler(name, **opts)


def upsample_request(req: GenerationRequest, upsampler: Any) -> GenerationRequest:
    """``req`` with its prompt (seed ``req.seed``) and each storyboard shot's prompt (seed ``req.seed + i``)
    upsampled; a storyboard's prompt that is the shots joined with " / " stays that join."""
    shots = [
        {**shot, "prompt": upsampler.upsample(shot["prompt"], req.seed + i)}
        for i, shot in enumerate(req.shots)
    ]
    if req.shots and req.prompt == " / ".join(s["prompt"] for s in req.shots):
        prompt = " / ".join(s["prompt"] for s in shots)
    else:
        prompt = upsampler.upsample(req.prompt, req.seed)
    return GenerationRequest(**{**req.__dict__, "prompt": prompt, "shots": shots})


class _BarShare:
    """One request's part of ``sample.py``'s progress bar: a first guess of its sampler steps (a window a
    shot), corrected when the pipeline has planned it (``on_plan``: extend's and storyboard's rolling windows
    depend on the source's length and the seconds asked), and what is left of it skipped when it fails."""

    def __init__(self, bar: Any, task: Any, guess: int) -> None:
        self.bar, self.task, self.total, self.done = bar, task, guess, 0

    def step(self, _: int) -> None:
        self.done += 1
        self.bar.advance(self.task, 1)

    def plan(self, n: int) -> None:
        self.bar.update(self.task, total=self.bar.tasks[self.task].total + n - self.total)
        self.total = n

    def skip(self) -> None:
        self.bar.advance(self.task, max(0, self.total - self.done))
        self.done = self.total


def sample_from_config(cfg: Any) -> dict:
    """The body of ``sample.py``: filter prompts, generate each request, write mp4s and ``samples.json``.

    A bad request (unreadable line, unknown mode, refused prompt, generation error) is reported with its
    reason in ``samples.json`` (``failed``; refused prompts also in ``rejected``) and the batch goes on;
    ``counts.failed`` tells the caller whether to exit non-zero."""
    from rich.progress import Progress

    from sora import provenance
    from sora.safety import PromptFilter

    out_dir = Path(cfg.out_dir)
    _save_config(cfg, out_dir)
    safety_cfg = cfg.get("safety") or {}
    blocklist = safety_cfg.get("blocklist")
    prompt_filter = PromptFilter(
        **({"blocklist": tuple(blocklist)} if blocklist else {}),
        enabled=bool(safety_cfg.get("enabled", True)),
    )
    prov = cfg.get("provenance") or {}
    signing_key = provenance.load_private_key(prov["key"]) if prov.get("key") else None
    entries = read_requests(cfg)
    upsampler = build_prompt_upsampler(cfg)
    pipe = AVPipeline.from_pretrained(
        cfg.checkpoint,
        use_ema=cfg.get("use_ema", True),
        device=cfg.get("device", "cpu"),
        dtype=cfg.get("dtype"),
        text_encoder_path=cfg.get("text_encoder_path"),
    )
    model_hash = provenance.weights_hash(
        {n: m for n in NETWORKS if (m := getattr(pipe, n, None)) is not None}
    )
    wm = cfg.get("watermark") or {}
    results, rejected, failed = [], [], []
    requests = [e for e in entries if isinstance(e, GenerationRequest)]
    with Progress(transient=False) as bar:
        task = bar.add_task("sampling", total=sum(r.steps * max(1, len(r.shots)) for r in requests))

        def fail(row: dict) -> None:
            failed.append(row)
            bar.console.print(f"[red]request {row['index']} failed ({row['reason']}); no clip, going on")

        for i, req in enumerate(entries):
            if isinstance(req, BadRequest):
                fail({"index": i, "source": req.source, "prompt": req.prompt, "reason": req.reason})
                continue
            share = _BarShare(bar, task, req.steps * max(1, len(req.shots)))
            user = req
            if upsampler is not None:
                try:
                    req = upsample_request(user, upsampler)
                except Exception as err:  # noqa: BLE001 - reported like any failed request
                    fail(
                        {
                            "index": i,
                            "prompt": user.prompt,
                            "reason": f"upsampling: {type(err).__name__}: {err}",
                        }
                    )
                    share.skip()
                    continue
            said = (
                {"prompt": user.prompt}
                if upsampler is None
                else {"prompt": user.prompt, "upsampled_prompt": req.prompt}
            )
            # the filter reads what the user wrote and what the model is given (both, when upsampled)
            texts = [
                t
                for r in ([user] if req is user else [user, req])
                for t in ([s["prompt"] for s in r.shots] if r.mode == "storyboard" else [r.prompt])
            ]
            rules = [r for r in (prompt_filter.check(t) for t in texts) if r]
            if rules:
                row = {"index": i, **said, "mode": req.mode, "rule": rules[0]}
                rejected.append(row)
                fail({**row, "reason": f"prompt rejected by the safety filter (rule: {rules[0]})"})
                share.skip()
                continue
            try:
                clip = pipe.generate(req, progress=share.step, on_plan=share.plan)
                path = save_clip(
                    clip,
                    out_dir / f"{i:03d}_{req.mode}.mp4",
                    config_hash=pipe.config_hash,
                    watermark=bool(wm.get("enabled", True)),
                    watermark_text=wm.get("text", "AI"),
                    watermark_opacity=float(wm.get("opacity", 0.6)),
                    invisible_watermark=bool(wm.get("invisible", True)),
                    signing_key=signing_key,
                    model_hash=model_hash,
                    save_latents=cfg.get("save_latents", False),
                    user_prompt=user.prompt if upsampler is not None else None,
                )
            except Exception as err:  # noqa: BLE001 - one bad request never ends the batch; it is reported
                fail({"index": i, **said, "mode": req.mode, "reason": f"{type(err).__name__}: {err}"})
                share.skip()
                continue
            row = {"index": i, "path": str(path), **said, "mode": req.mode, "seed": req.seed}
            if upsampler is not None and req.shots:
                row["upsampled_shots"] = [s["prompt"] for s in req.shots]
            results.append(row)
    manifest = {
        "clips": results,
        "rejected": rejected,
        "failed": failed,
        "counts": {"requests": len(entries), "written": len(results), "failed": len(failed)},
        "checkpoint": str(cfg.checkpoint),
        "model_config_hash": pipe.config_hash,
        "model_hash": model_hash,
        "signed_by": provenance.key_id(signing_key.public_key()) if signing_key is not None else None,
    }
    if upsampler is not None:
        manifest["upsampler"] = upsampler.describe()
    (out_dir / "samples.json").write_text(json.dumps(manifest, indent=2))
    print(
        f"wrote {len(results)} clip(s) to {out_dir}; {len(failed)} of {len(entries)} request(s) failed "
        f"({len(rejected)} rejected by the safety filter){': see samples.json' if failed else ''}"
    )
    return manifest
