"""Measure the invisible watermark: false positives on clips never marked, detection after attacks.

``python -m sora.watermark_robustness --clips 200 --keys 5`` prints a JSON table: for each clip family
(``natural``: procedural 1/f textures under a moving, zooming camera with sensor noise and lighting drift;
``world``: the synthetic physics world) the scores of unmarked clips (video and audio, every key) and the
detection rate of marked clips after each attack. Every clip goes through H.264 + AAC (the project's
``media.write_mp4``) at least once, as a saved clip does.

Attacks: ``none`` (the saved clip), ``reencode23``/``reencode28`` (decode and encode again at crf 23, the
ffmpeg default, or 28), ``crop10`` (10 % of width
and height cut, at a random corner or centred, then encoded), ``resize48``/``resize96`` (scaled, then
encoded),
``crop10_resize64`` (cropped 10 % and scaled back to 64x64, the usual "crop and re-upload").
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np

from sora import media, watermark

FAMILIES = ("natural", "world")
ATTACKS = ("none", "reencode23", "reencode28", "crop10", "resize48", "resize96", "crop10_resize64")


def natural_clip(rng: np.random.Generator, frames: int = 17, size: int = 64, sr: int = 16000) -> tuple:
    """A natural-looking clip: a colour 1/f texture seen by a panning/zooming camera, lighting drift, sensor
    noise; sound: pink noise with a few decaying partials (ambience, events). Returns (video, audio)."""
    big = size * 2
    fy, fx = np.meshgrid(np.fft.fftfreq(big), np.fft.fftfreq(big), indexing="ij")
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    beta = rng.uniform(1.6, 2.4)  # natural images: amplitude ~ 1/f^(beta/2 * 2)
    layers = []
    for _ in range(3):
        spec = (rng.standard_normal((big, big)) + 1j * rng.standard_normal((big, big))) / radius ** (beta / 2)
        spec[0, 0] = 0
        layer = np.fft.ifft2(spec).real
        layers.append(layer / layer.std())
    mix = rng.uniform(0.2, 1.0, (3, 3)) + np.eye(3)  # correlated colour channels, as in photos
    texture = np.einsum("cd,dyx->yxc", mix, np.stack(layers))
    texture = 128 + rng.uniform(20, 45) * texture / texture.std() + rng.uniform(-40, 40, 3)
    y0, x0 = rng.uniform(0, big - size * 1.2, 2)
    vy, vx = rng.uniform(-1.5, 1.5, 2)
    zoom = rng.uniform(-0.01, 0.01)
    gain = 1 + rng.uniform(-0.04, 0.04) * np.linspace(0, 1, frames)
    video = np.empty((frames, size, size, 3))
    grid = np.arange(size)
    for t in range(frames):
        scale = 1 + zoom * t
        yy = np.clip(y0 + vy * t + grid * scale, 0, big - 1)
        xx = np.clip(x0 + vx * t + grid * scale, 0, big - 1)
        iy, ix = yy.astype(int), xx.astype(int)
        wy, wx = (yy - iy)[:, None, None], (xx - ix)[None, :, None]
        iy1, ix1 = np.minimum(iy + 1, big - 1), np.minimum(ix + 1, big - 1)
        img = (
            texture[iy][:, ix] * (1 - wy) * (1 - wx)
            + texture[iy1][:, ix] * wy * (1 - wx)
            + texture[iy][:, ix1] * (1 - wy) * wx
            + texture[iy1][:, ix1] * wy * wx
        )
        video[t] = img * gain[t] + rng.normal(0, 2.0, img.shape)
    n = round(frames / 24 * sr)
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white) / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0))
    audio = np.fft.irfft(spec, n)
    audio = rng.uniform(0.005, 0.05) * audio / audio.std()
    tt = np.arange(n) / sr
    for _ in range(rng.integers(0, 4)):
        start = rng.uniform(0, n / sr)
        env = np.exp(-np.clip(tt - start, 0, None) * rng.uniform(5, 40)) * (tt >= start)
        audio += rng.uniform(0.05, 0.3) * env * np.sin(2 * np.pi * rng.uniform(80, 3000) * tt)
    return video.round().clip(0, 255).astype(np.uint8), np.clip(audio, -1, 1).astype(np.float32)[None]


def world_clip(seed: int, frames: int = 17) -> tuple:
    from data_pipelines.synthetic import WorldConfig, generate_clip

    clip = generate_clip(WorldConfig(duration=frames / 24 + 0.05), seed)
    n = round(frames / 24 * 16000)
    return clip.video[:frames], clip.audio[:, :n]


def encode_decode(video: np.ndarray, audio: np.ndarray | None, crf: int = 18) -> tuple:
    """Through H.264 + AAC and back (the project's writer and reader)."""
    buf = io.BytesIO()
    media.write_mp4(buf, video, 24.0, audio, 16000, crf=crf)
    back = media.read_media(buf.getvalue())
    return back.video, back.audio


def _resize(video: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in video])


def attack(video: np.ndarray, audio: np.ndarray | None, name: str, rng: np.random.Generator) -> tuple:
    """Apply attack ``name`` to a decoded clip and encode it again (crf 23 unless the name says)."""
    t, h, w, _ = video.shape
    if name == "none":
        return video, audio
    if name.startswith("reencode"):
        return encode_decode(video, audio, crf=int(name[len("reencode") :]))
    if name.startswith("crop10"):
        ch, cw = (round(h * 0.9) // 2) * 2, (round(w * 0.9) // 2) * 2
        if rng.random() < 0.5:
            top, left = (h - ch) // 2, (w - cw) // 2
        else:
            top, left = int(rng.choice([0, h - ch])), int(rng.choice([0, w - cw]))
        video = video[:, top : top + ch, left : left + cw]
        if name == "crop10_resize64":
            video = _resize(video, 64, 64)
        return encode_decode(np.ascontiguousarray(video), audio, crf=23)
    if name.startswith("resize"):
        size = int(name[len("resize") :])
        return encode_decode(_resize(video, size, size), audio, crf=23)
    raise ValueError(f"unknown attack {name!r}; one of {ATTACKS}")


def _skipped(*_args, **_kwargs) -> watermark.Detection:
    return watermark.Detection(float("nan"), float("nan"), False, {"reason": "not measured"})


def measure(
    clips: int, keys: int, seed: int = 0, families: tuple[str, ...] = FAMILIES, video: bool = True
) -> dict:
    """False positives of ``keys`` keys on ``clips`` unmarked clips per family, and detection after each
    attack
    (raw scores under ``scores`` so that any threshold can be evaluated)."""
    detect_video = watermark.detect_video if video else _skipped
    rng = np.random.default_rng(seed)
    key_list = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(keys)]
    out: dict = {}
    for family in families:
        null_v, null_a = [], []
        hits = {
            a: {"video": 0, "audio": 0, "either": 0, "n": 0, "video_scores": [], "audio_scores": []}
            for a in ATTACKS
        }
        for i in range(clips):
            video, audio = natural_clip(rng) if family == "natural" else world_clip(seed * 100_000 + i)
            plain_v, plain_a = encode_decode(video, audio)
            for key in key_list:  # unmarked clip, every key: false positives
                null_v.append(detect_video(plain_v, key).score)
                null_a.append(watermark.detect_audio(plain_a, 16000, key).score)
            key = key_list[i % keys]
            marked_v, marked_a = encode_decode(
                watermark.embed_video(video, key), watermark.embed_audio(audio, 16000, key)
            )
            for name in ATTACKS:
                v, a = attack(marked_v, marked_a, name, rng)
                dv, da = detect_video(v, key), watermark.detect_audio(a, 16000, key)
                row = hits[name]
                row["n"] += 1
                row["video"] += dv.detected
                row["audio"] += da.detected
                row["either"] += dv.detected or da.detected
                row["video_scores"].append(round(dv.score, 3))
                row["audio_scores"].append(round(da.score, 3))
        nv, na = np.array(null_v), np.array(null_a)
        out[family] = {
            "unmarked_trials": len(nv),
            "video_false_positives": int((nv > watermark.VIDEO_THRESHOLD).sum()),
            "audio_false_positives": int((na > watermark.AUDIO_THRESHOLD).sum()),
            "video_null_max": round(float(nv.max()), 2),
            "video_null_p99": round(float(np.quantile(nv, 0.99)), 2),
            "audio_null_max": round(float(na.max()), 2),
            "audio_null_p99": round(float(np.quantile(na, 0.99)), 2),
            "detection": {
                name: {
                    "n": r["n"],
                    "video_rate": r["video"] / r["n"],
                    "audio_rate": r["audio"] / r["n"],
                    "either_rate": r["either"] / r["n"],
                    "video_score_min": round(float(np.min(r["video_scores"])), 2),
                    "video_score_median": round(float(np.median(r["video_scores"])), 2),
                    "audio_score_min": round(float(np.min(r["audio_scores"])), 2),
                    "audio_score_median": round(float(np.median(r["audio_scores"])), 2),
                }
                for name, r in hits.items()
            },
            "scores": {
                "unmarked_video": [round(x, 3) for x in null_v],
                "unmarked_audio": [round(x, 3) for x in null_a],
                **{f"{name}_video": r["video_scores"] for name, r in hits.items()},
                **{f"{name}_audio": r["audio_scores"] for name, r in hits.items()},
            },
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sora.watermark_robustness", description=__doc__)
    parser.add_argument("--clips", type=int, default=50, help="clips per family")
    parser.add_argument("--keys", type=int, default=4, help="keys tried on every unmarked clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=FAMILIES, action="append", help="default: both")
    parser.add_argument("--scores", action="store_true", help="also print every raw score")
    parser.add_argument("--audio-only", action="store_true", help="skip the (slower) video detector")
    args = parser.parse_args(argv)
    start = time.time()
    result = measure(args.clips, args.keys, args.seed, tuple(args.family or FAMILIES), not args.audio_only)
    if not args.scores:
        for family in result.values():
            family.pop("scores")
    result["seconds"] = round(time.time() - start, 1)
    result["thresholds"] = {"video": watermark.VIDEO_THRESHOLD, "audio": watermark.AUDIO_THRESHOLD}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
