"""Audio VAE on log-mel spectrograms and a weight-free Griffin-Lim vocoder (loss: sora/training/vae_loss.py).

Framing, stated once and used everywhere:

- `log_mel(audio (B, 1, S)) -> (B, n_mels, S // hop_length)`: frame `f` is centred on sample `f * hop_length`
  (`center=True`, zero padding); torchaudio's extra trailing frame is dropped, so 16 kHz audio gives exactly
  100 frames per second.
- `encode` first zero-pads the clip on the right to a multiple of `sample_rate / latent_rate` samples (640 by
  default), so `L = ceil(S * latent_rate / sample_rate)` latents cover it and the mel has `4 L` frames.
- `decode(z (B, 8, L)) -> log-mel (B, n_mels, 4 L)`; `decode_audio` makes it a `(B, 1, S)` waveform (vocoder).

Log-mel is the natural log of the magnitude (power 1) mel spectrogram, floored at `1e-5` (silence = -11.5).
The network is a 1D convolutional VAE over mel frames (mel bins are channels); unlike the video VAE it need
not be causal (audio is always encoded as whole clips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from sora.models.distributions import DiagonalGaussian, LatentStatsMixin
from sora.models.layers import group_norm

LOG_MEL_FLOOR = 1e-5
# The network sees (log_mel - MEL_OFFSET) / MEL_SCALE: log-mels span about [-11.5, 3], which this maps to
# about [-1.6, 2], so the first conv starts at unit scale and the decoder's output head needs no large bias.
MEL_OFFSET = -4.0
MEL_SCALE = 4.5


@runtime_checkable
class Vocoder(Protocol):
    """Turns a log-mel spectrogram `(B, n_mels, F)` into a waveform `(B, 1, F * hop_length)` in [-1, 1]."""

    def __call__(self, log_mel: Tensor) -> Tensor: ...


class GriffinLimVocoder(nn.Module):
    """Weight-free vocoder: mel -> linear magnitude (pseudo-inverse, then non-negative LSQ) -> Griffin-Lim.

    The pseudo-inverse of the mel filterbank gives a first linear spectrogram; `nnls_iters` multiplicative
    updates (Lee-Seung) refine it to a non-negative least-squares solution, which keeps spectral peaks sharp
    (a pure tone stays within a bin or two). Deterministic (zero initial phase). About 0.1 s per second of
    16 kHz audio on one CPU core.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        n_iter: int = 32,
        nnls_iters: int = 20,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.n_iter, self.nnls_iters, self.momentum = n_iter, nnls_iters, momentum
        fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
        # Buffers are derived from the arguments, so they are not saved in the state_dict.
        self.register_buffer("fbank", fb, persistent=False)  # (n_freqs, n_mels)
        self.register_buffer("fbank_pinv", torch.linalg.pinv(fb), persistent=False)  # (n_mels, n_freqs)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def mel_to_linear(self, mel: Tensor) -> Tensor:
        """Magnitude mel `(B, n_mels, F)` -> magnitude linear spectrogram `(B, n_fft // 2 + 1, F)`."""
        spec = torch.einsum("mf,bmt->bft", self.fbank_pinv, mel).clamp(min=0) + 1e-8
        target = torch.einsum("fm,bmt->bft", self.fbank, mel)  # (B, n_freqs, F), fixed numerator
        for _ in range(self.nnls_iters):
            projected = torch.einsum("fm,bmt->bft", self.fbank, torch.einsum("fm,bft->bmt", self.fbank, spec))
            spec = spec * target / (projected + 1e-10)
        return spec

    def forward(self, log_mel: Tensor) -> Tensor:
        """`(B, n_mels, F)` log-mel -> waveform `(B, 1, F * hop_length)` in [-1, 1]."""
        if log_mel.dim() != 3 or log_mel.shape[1] != self.n_mels:
            raise ValueError(f"log_mel must be (B, {self.n_mels}, F), got {tuple(log_mel.shape)}")
        with torch.autocast(device_type=log_mel.device.type, enabled=False):
            spec = self.mel_to_linear(log_mel.float().exp())  # (B, n_freqs, F)
            # Repeat the last frame: with F + 1 centred frames, `length = F * hop` matches the STFT framing.
            spec = torch.cat([spec, spec[..., -1:]], dim=-1)  # (B, n_freqs, F + 1)
            length = (spec.shape[-1] - 1) * self.hop_length
            wav = torchaudio.functional.griffinlim(
                spec, self.window, self.n_fft, self.hop_length, self.n_fft, 1.0, self.n_iter, self.momentum,
                length, False,
            )  # fmt: skip
        return wav.clamp(-1.0, 1.0).unsqueeze(1)  # (B, 1, F * hop)


class ResBlock1d(nn.Module):
    """Pre-norm residual block of two kernel-3 convs; `(B, C_in, N) -> (B, C_out, N)`.

    The second conv starts at zero, so a fresh block is its skip path (as in the video VAE)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, N)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, C_out, N)
        return h + self.skip(x)


class OutHead(nn.Module):
    """`conv(silu(norm(x)))`, plus a 1x1 linear shortcut from `x` into the first `shortcut_channels` outputs
    (the encoder's latent mean, or all of the decoder's mels): the norm alone erases per-clip levels.
    `(B, C, N) -> (B, C_out, N)`."""

    def __init__(self, channels: int, out_channels: int, shortcut_channels: int | None) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.conv = nn.Conv1d(channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv1d(channels, shortcut_channels, 1) if shortcut_channels else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.silu(self.norm(x)))  # (B, C_out, N)
        if self.shortcut is None:
            return y
        k = self.shortcut.out_channels
        return torch.cat([y[:, :k] + self.shortcut(x), y[:, k:]], dim=1)


class AudioVAE(LatentStatsMixin):
    """Log-mel audio VAE: `(B, 1, S)` 16 kHz in [-1, 1] <-> latents `(B, 8, ceil(S / 640))` at 25 Hz.

    Args:
        latent_channels: latent channels (8).
        base_channels: width of the first level; level `i` has `base_channels * channel_mult[i]` channels.
        channel_mult: per-level widths; the last `log2(mel_rate / latent_rate)` level transitions halve time.
        num_res_blocks: residual blocks per level.
        sample_rate, n_fft, hop_length, n_mels: mel front end (16000, 1024, 160, 64).
        latent_rate: latent frames per second (25); `sample_rate / latent_rate` must be `hop_length * 2^k`.
        vocoder: mel -> waveform for `decode_audio`; a `GriffinLimVocoder` with matching framing by default.
        shortcut: 1x1 linear paths around the encoder's and the decoder's output norm + conv (`OutHead`).
    """

    # Defaults, readable on the class (e.g. to size data before a model exists); instances set their own.
    sample_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 1024
    n_mels: int = 64
    latent_rate: int = 25
    latent_channels: int = 8

    def __init__(
        self,
        latent_channels: int = 8,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        latent_rate: int = 25,
        vocoder: Vocoder | None = None,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        hops_per_latent = sample_rate / (latent_rate * hop_length)
        n_down = int(round(math.log2(hops_per_latent))) if hops_per_latent >= 1 else -1
        if n_down < 0 or 2**n_down != hops_per_latent or n_down > len(channel_mult) - 1:
            raise ValueError(
                "sample_rate / (latent_rate * hop_length) must be a power of two <= "
                f"2 ** (len(channel_mult) - 1) = {2 ** (len(channel_mult) - 1)}, got {hops_per_latent}"
            )
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.latent_rate, self.latent_channels = latent_rate, latent_channels
        self.temporal_compression = 2**n_down
        self.samples_per_latent = hop_length * 2**n_down
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=1.0, pad_mode="constant"
        )
        downs = [i >= len(channel_mult) - 1 - n_down for i in range(len(channel_mult) - 1)]
        widths = [base_channels * m for m in channel_mult]

        enc: list[nn.Module] = [nn.Conv1d(n_mels, widths[0], 3, padding=1)]
        ch = widths[0]
        for i, w in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(ResBlock1d(ch, w))
                ch = w
            if i < len(widths) - 1:
                enc.append(nn.Conv1d(ch, ch, 3, stride=2 if downs[i] else 1, padding=1))
        enc += [ResBlock1d(ch, ch), OutHead(ch, 2 * latent_channels, latent_channels if shortcut else None)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv1d(latent_channels, ch, 3, padding=1), ResBlock1d(ch, ch)]
        for i in reversed(range(len(widths))):
            for _ in range(num_res_blocks):
                dec.append(ResBlock1d(ch, widths[i]))
                ch = widths[i]
            if i > 0:
                if downs[i - 1]:
                    dec.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                dec.append(nn.Conv1d(ch, ch, 3, padding=1))
        dec.append(OutHead(ch, n_mels, n_mels if shortcut else None))
        self.decoder = nn.Sequential(*dec)
        self._init_latent_stats(latent_channels)
        self.vocoder: Vocoder = (
            vocoder if vocoder is not None else GriffinLimVocoder(sample_rate, n_fft, hop_length, n_mels)
        )

    def latent_length(self, num_samples: int) -> int:
        """Latent frames for `num_samples` samples: `ceil(num_samples * latent_rate / sample_rate)`."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return -(-num_samples // self.samples_per_latent)

    def _check_audio(self, audio: Tensor) -> None:
        if audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[2] < 1:
            raise ValueError(f"audio must be mono (B, 1, S) with S >= 1, got {tuple(audio.shape)}")

    def log_mel(self, audio: Tensor) -> Tensor:
        """`(B, 1, S)` -> log-mel `(B, n_mels, S // hop_length)` (frame `f` centred on sample `f * hop`)."""
        self._check_audio(audio)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            mel = self.mel(audio[:, 0].float())  # (B, n_mels, S // hop + 1)
        return torch.log(mel.clamp(min=LOG_MEL_FLOOR))[..., : audio.shape[2] // self.hop_length]

    def _pad_audio(self, audio: Tensor) -> Tensor:
        pad = self.latent_length(audio.shape[2]) * self.samples_per_latent - audio.shape[2]
        return F.pad(audio, (0, pad))  # (B, 1, L * samples_per_latent)

    def encode_log_mel(self, log_mel: Tensor) -> DiagonalGaussian:
        """`(B, n_mels, 4 L)` log-mel -> posterior with mean/logvar `(B, latent_channels, L)`."""
        if (
            log_mel.dim() != 3
            or log_mel.shape[1] != self.n_mels
            or log_mel.shape[2] % self.temporal_compression
        ):
            raise ValueError(
                f"log_mel must be (B, {self.n_mels}, F) with F a multiple of {self.temporal_compression}, "
                f"got {tuple(log_mel.shape)}"
            )
        return DiagonalGaussian.from_moments(self.encoder((log_mel - MEL_OFFSET) / MEL_SCALE))

    def encode(self, audio: Tensor) -> DiagonalGaussian:
        """`(B, 1, S)` -> posterior with mean/logvar `(B, latent_channels, ceil(S / 640))`."""
        self._check_audio(audio)
        return self.encode_log_mel(self.log_mel(self._pad_audio(audio)))

    def decode(self, z: Tensor) -> Tensor:
        """`(B, latent_channels, L)` -> log-mel `(B, n_mels, 4 L)`."""
        if z.dim() != 3 or z.shape[1] != self.latent_channels or z.shape[2] < 1:
            raise ValueError(f"latents must be (B, {self.latent_channels}, L), got {tuple(z.shape)}")
        return self.decoder(z) * MEL_SCALE + MEL_OFFSET

    def decode_audio(self, z: Tensor, num_samples: int | None = None) -> Tensor:
        """`(B, latent_channels, L)` -> waveform `(B, 1, num_samples or L * 640)` via `self.vocoder`."""
        wav = self.vocoder(self.decode(z).float())  # (B, 1, 4 L * hop)
        if num_samples is not None:
            wav = (
                wav[..., :num_samples]
                if wav.shape[-1] >= num_samples
                else F.pad(wav, (0, num_samples - wav.shape[-1]))
            )
        return wav

    def forward(
        self, audio: Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, DiagonalGaussian]:
        """`(B, 1, S)` -> `(recon_log_mel, target_log_mel)` `(B, n_mels, 4 L)` and posterior `(B, 8, L)`."""
        self._check_audio(audio)
        target = self.log_mel(self._pad_audio(audio))  # (B, n_mels, 4 L)
        posterior = self.encode_log_mel(target)  # mean/logvar (B, latent_channels, L)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), target, posterior
