"""Read and write mp4 clips with sound (H.264 + AAC) through PyAV.

torchaudio's load/save need torchcodec nowadays, so all media I/O in the project goes through this module
(PyAV for muxing and audio, decord for fast random-access frame reads in the data loader).

Conventions: video arrays are ``uint8 (T, H, W, 3)`` RGB; audio arrays are ``float32 (channels, samples)``
in [-1, 1]. Tensors in the DESIGN.md layout are produced by :func:`video_to_tensor` / :func:`audio_to_tensor`.
"""

from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch

Source = str | os.PathLike | bytes | BinaryIO

# Metadata keys are namespaced so that provenance written by sora.safety never collides with encoder tags.
METADATA_KEY = "sora"


@dataclass
class Media:
    """A decoded clip: ``video`` uint8 (T, H, W, 3), ``audio`` float32 (C, S) or None."""

    video: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


@dataclass
class MediaInfo:
    """What :func:`probe` learns from the container without decoding every frame."""

    duration: float
    fps: float
    width: int
    height: int
    num_frames: int
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None
    video_codec: str
    audio_layout: str | None = None  # FFmpeg's name for the channel layout: "mono", "stereo", "5.1", ...
    audio_span: tuple[float, float] | None = None  # (start, end) seconds of the audio track, when known


def _open(src: Source, mode: str = "r", **kwargs) -> av.container.Container:
    if isinstance(src, bytes | bytearray):
        src = io.BytesIO(src)
    elif isinstance(src, os.PathLike):
        src = os.fspath(src)
    return av.open(src, mode, **kwargs)


@functools.cache
def x264_asm() -> str | None:
    """The instruction sets x264 may use: ``"AVX2"`` on a CPU with AVX-512, else ``None`` (x264 decides).

    x264's AVX-512 code path is not byte-reproducible: with its macroblock-tree rate control (on by default)
    the same frames encode to different bytes from one call to the next (half of 60 encodes of a 48x32 clip
    differed on an AMD EPYC under load; with ``asm=AVX2`` or ``mbtree=0`` all 60 were equal). Capping x264 at
    AVX2 keeps mbtree's bitrate savings (``mbtree=0`` cost 30-60% more bytes at the same crf) and the speed
    (48 frames of 256x256: 96-101 ms an encode with AVX2, 92-105 ms with AVX-512, same machine and run).
    Every CPU with AVX-512 has AVX2, FMA3 and BMI2, the set x264 names ``AVX2``.
    """
    try:  # numpy's own runtime CPU dispatch table: portable across operating systems
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:  # numpy < 2
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            features = {}
    return "AVX2" if features.get("AVX512F") and features.get("AVX2") else None


def _fraction(fps: float) -> Fraction:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def encode_mp4(
    video: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    metadata: dict | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    audio_bitrate: int = 96_000,
) -> bytes:
    """Encode ``video`` uint8 (T, H, W, 3) and optional ``audio`` float (C, S) into mp4 bytes.

    H.264 (yuv420p, so H and W must be even) and AAC. ``metadata`` (a JSON-serialisable dict) is stored in
    the container under the ``sora`` tag and read back by :func:`read_media` / :func:`read_metadata`.
    """
    buf = io.BytesIO()
    write_mp4(
        buf,
        video,
        fps,
        audio,
        sample_rate,
        metadata=metadata,
        crf=crf,
        preset=preset,
        audio_bitrate=audio_bitrate,
    )
    return buf.getvalue()


def write_mp4(
    dst: str | os.PathLike | BinaryIO,
    video: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    metadata: dict | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    audio_bitrate: int = 96_000,
) -> None:
    """Write an mp4 file (or file-like object); see :func:`encode_mp4` for the arguments."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video must be uint8 (T, H, W, 3), got {video.dtype} {video.shape}")
    num_frames, height, width, _ = video.shape
    if num_frames == 0:
        raise ValueError("video has no frames")
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {height}x{width}")
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[0] not in (1, 2):
            raise ValueError(f"audio must be (channels, samples) with 1 or 2 channels, got {audio.shape}")
    if isinstance(dst, os.PathLike | str):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        dst = os.fspath(dst)

    container = av.open(dst, "w", format="mp4", options={"movflags": "use_metadata_tags"})
    try:
        if metadata:
            container.metadata[METADATA_KEY] = json.dumps(metadata, sort_keys=True)
        vstream = container.add_stream("libx264", rate=_fraction(fps))
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        # One x264 thread, so the bytes do not depend on the machine's core count (the project parallelises
        # over clips instead), and no AVX-512 (see x264_asm): both are needed for byte-reproducible output.
        options = {"crf": str(crf), "preset": preset, "threads": "1"}
        if x264_asm():
            options["x264-params"] = f"asm={x264_asm()}"
        vstream.options = options
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=int(sample_rate))
            astream.layout = "mono" if audio.shape[0] == 1 else "stereo"
            astream.bit_rate = audio_bitrate
        for frame in video:
            # Convert to yuv420p explicitly: the encoder's implicit conversion is not bit-reproducible.
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            for packet in vstream.encode(yuv):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None:
            aframe = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(np.clip(audio, -1.0, 1.0)), format="fltp", layout=astream.layout.name
            )
            aframe.sample_rate, aframe.pts = int(sample_rate), 0
            for packet in astream.encode(aframe):
                container.mux(packet)
            for packet in astream.encode(None):
                container.mux(packet)
    finally:
        container.close()


def _metadata(container: av.container.Container) -> dict:
    raw = container.metadata.get(METADATA_KEY)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {"_unparsed": raw}


def read_metadata(src: Source) -> dict:
    """The ``sora`` metadata dict stored by :func:`write_mp4` (empty if none)."""
    with _open(src) as container:
        return _metadata(container)


def read_media(src: Source, *, with_audio: bool = True, max_frames: int | None = None) -> Media:
    """Decode a whole clip with PyAV. Audio is trimmed to the video's duration at its own sample rate.

    The mp4 edit list written by the AAC encoder is honoured by the demuxer, so decoded audio starts at t=0
    (encoder priming samples are not returned).
    """
    with _open(src) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
        if not frames:
            raise ValueError("video stream has no decodable frames")
        video = np.stack(frames)
        metadata = _metadata(container)
    audio, sample_rate = (None, None)
    if with_audio:
        audio, sample_rate = read_audio(src, duration=len(frames) / fps if fps else None)
    return Media(video=video, fps=fps, audio=audio, sample_rate=sample_rate, metadata=metadata)


def read_audio(
    src: Source, *, start: float = 0.0, duration: float | None = None
) -> tuple[np.ndarray | None, int | None]:
    """Decode the first audio stream as float32 (C, S) from ``start`` seconds for ``duration`` seconds.

    Returns ``(None, None)`` when the file has no audio stream. The window is zero-padded at the end if the
    stream is shorter than asked for.
    """
    with _open(src) as container:
        if not container.streams.audio:
            return None, None
        astream = container.streams.audio[0]
        sample_rate = int(astream.sample_rate)
        channels = astream.channels
        if start > 0:
            container.seek(int(max(start - 0.5, 0) / astream.time_base), stream=astream)
        chunks, first_sample = [], None
        stop = None if duration is None else start + duration
        for frame in container.decode(audio=0):
            pts = frame.pts if frame.pts is not None else 0
            t0 = float(pts * frame.time_base)
            if first_sample is None:
                first_sample = round(t0 * sample_rate)
            data = frame.to_ndarray()
            if data.dtype != np.float32:
                data = data.astype(np.float32) / (np.iinfo(data.dtype).max if data.dtype.kind == "i" else 1.0)
            if not frame.format.is_planar:
                data = data.reshape(-1, channels).T
            chunks.append(data)
            if stop is not None and t0 > stop:
                break
    if not chunks:
        return np.zeros((channels, 0), np.float32), sample_rate
    audio = np.concatenate(chunks, axis=1)
    offset = round(start * sample_rate) - (first_sample or 0)
    if offset > 0:
        audio = audio[:, offset:]
    elif offset < 0:
        audio = np.pad(audio, ((0, 0), (-offset, 0)))
    if duration is not None:
        n = round(duration * sample_rate)
        audio = audio[:, :n] if audio.shape[1] >= n else np.pad(audio, ((0, 0), (0, n - audio.shape[1])))
    return np.ascontiguousarray(audio, dtype=np.float32), sample_rate


def probe(src: Source) -> MediaInfo:
    """Duration, fps, size and audio presence from the container headers (raises ValueError if no video)."""
    with _open(src) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        if vstream.duration is not None and vstream.time_base is not None:
            duration = float(vstream.duration * vstream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        num_frames = vstream.frames or (round(duration * fps) if fps else 0)
        astream = container.streams.audio[0] if container.streams.audio else None
        return MediaInfo(
            duration=duration,
            fps=fps,
            width=vstream.codec_context.width,
            height=vstream.codec_context.height,
            num_frames=int(num_frames),
            has_audio=astream is not None,
            audio_sample_rate=int(astream.sample_rate) if astream is not None else None,
            audio_channels=astream.channels if astream is not None else None,
            video_codec=vstream.codec_context.name,
            audio_layout=astream.layout.name if astream is not None else None,
            audio_span=_span(astream) if astream is not None else None,
        )


def _span(stream: av.stream.Stream) -> tuple[float, float] | None:
    """(start, end) in seconds of a stream whose container records its duration."""
    if stream.duration is None or stream.time_base is None:
        return None
    start = float((stream.start_time or 0) * stream.time_base)
    return start, start + float(stream.duration * stream.time_base)


def resample_audio(audio: np.ndarray | torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample (C, S) audio with torchaudio's band-limited sinc interpolation."""
    import torchaudio.functional as AF

    audio = torch.as_tensor(audio, dtype=torch.float32)
    if orig_rate == new_rate:
        return audio
    return AF.resample(audio, int(orig_rate), int(new_rate))


def to_mono(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(C, S) -> (1, S) by averaging channels."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    return audio.mean(dim=0, keepdim=True)


LEFT_CHANNELS = frozenset("FL BL SL FLC TFL TBL WL SDL TSL BFL DL".split())
RIGHT_CHANNELS = frozenset("FR BR SR FRC TFR TBR WR SDR TSR BFR DR".split())


def downmix_matrix(channel_names: list[str], channels: int) -> np.ndarray:
    """The (channels, C) matrix that mixes C named source channels (FFmpeg names: FL, FR, FC, LFE, BL, SL...)
    down to 1 (mono) or 2 (stereo) channels.

    Left channels (FL, BL, SL, TFL, FLC...) go left, right ones right, centre ones (FC, BC, TC...) and those
    of unknown position to both at -3 dB, LFE is left out (a full-range mix, as in ITU-R BS.775). Each output
    row sums to 1, so a mix of signals in [-1, 1] stays in [-1, 1] (nothing is clipped). Mono is the mean of
    the two sides. A mono source sent to stereo is copied to both sides.
    """
    if channels not in (1, 2):
        raise ValueError(f"audio can be mixed to 1 or 2 channels, got {channels}")
    if not channel_names:
        raise ValueError("audio has no channels")
    sides = np.zeros((2, len(channel_names)), np.float64)
    for i, name in enumerate(channel_names):
        if name in LEFT_CHANNELS:
            sides[0, i] = 1.0
        elif name in RIGHT_CHANNELS:
            sides[1, i] = 1.0
        elif name not in ("LFE", "LFE2") or len(channel_names) == 1:
            sides[:, i] = 0.5**0.5  # centre, or a channel of unknown position: to both sides
    if not sides.any():  # only LFE channels: all of them
        sides[:] = 1.0
    if not sides[0].any() or not sides[1].any():  # one side has nothing (mono, or only-left sources)
        sides[:] = sides.sum(axis=0, keepdims=True)
    sides /= sides.sum(axis=1, keepdims=True)
    matrix = sides if channels == 2 else sides.mean(axis=0, keepdims=True)
    return matrix.astype(np.float32)


def downmix(audio: np.ndarray, channel_names: list[str], channels: int) -> np.ndarray:
    """float32 (C, S) audio with the named channels -> float32 (channels, S); see :func:`downmix_matrix`."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != len(channel_names):
        raise ValueError(f"audio of shape {audio.shape} does not match the layout {channel_names}")
    if audio.shape[0] == channels and (channels == 1 or channel_names[:2] == ["FL", "FR"]):
        return audio
    return downmix_matrix(channel_names, channels) @ audio


def layout_channels(layout: str) -> list[str]:
    """The channel names of an FFmpeg layout name (``"5.1"`` -> FL, FR, FC, LFE, BL, BR)."""
    return [c.name for c in av.AudioLayout(layout).channels]


def video_to_tensor(video: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(video)).float().div_(127.5).sub_(1.0)
    return x.permute(3, 0, 1, 2).contiguous()


def tensor_to_video(x: torch.Tensor) -> np.ndarray:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"expected (3, T, H, W), got {tuple(x.shape)}")
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()
