"""Sound from the physics: a damped modal "tonk" at every contact event, plus an optional low rumble.

Each impact excites the object's vibration modes (exponentially decaying sinusoids) and a millisecond
broadband click for the contact itself:
- onset: the contact time, to the sample (``round(time * sample_rate)``);
- loudness: grows with the normal approach speed (and a little with size);
- pitch: set by material (rubber low and dull, wood hollow, metal high and ringing) and by size: the
  frequency scales as 1 / radius, so bigger objects sound lower;
- an object-object contact sounds both objects.

Like rendering, synthesis reads only the metadata (``contacts``, ``objects``, ``scene.px_per_m``, ``audio``),
so evaluation can shift or drop contacts and re-synthesise a deliberately out-of-sync soundtrack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaterialSound:
    """Modal model of a material, for an object of the reference radius (0.15 m, the default ``medium``)."""

    base_hz: float
    """Fundamental frequency."""
    ratios: tuple[float, ...]
    """Partials relative to the fundamental (inharmonic for wood and metal, like bars and plates)."""
    gains: tuple[float, ...]
    decay_s: float
    """Time constant of the fundamental; partial k decays faster, as decay_s / sqrt(ratio_k)."""
    click: float
    """Gain of the broadband contact transient, relative to the modes."""


MATERIAL_SOUNDS: dict[str, MaterialSound] = {
    "rubber": MaterialSound(
        base_hz=170.0, ratios=(1.0, 1.47, 2.09), gains=(1.0, 0.45, 0.2), decay_s=0.05, click=0.5
    ),
    "wood": MaterialSound(
        base_hz=520.0, ratios=(1.0, 2.57, 4.9), gains=(1.0, 0.5, 0.25), decay_s=0.04, click=0.7
    ),
    # a real bell rings for seconds; 0.15 s keeps a ring without burying the onset of the next impact
    "metal": MaterialSound(
        base_hz=1300.0, ratios=(1.0, 2.76, 5.4, 8.93), gains=(1.0, 0.6, 0.4, 0.25), decay_s=0.15, click=0.5
    ),
}

REFERENCE_RADIUS_M = 0.15
"""The size whose modes are listed in :data:`MATERIAL_SOUNDS`."""

FULL_SCALE_SPEED = 5.0
"""Impact speed in m/s that reaches :data:`PEAK_GAIN` (faster impacts are not louder)."""

PEAK_GAIN = 0.6
CLICK_TIME = 0.0015
"""Time constant of the contact click, in seconds."""

AMBIENCE_CUTOFF_HZ = 150.0
"""The ambience is noise with little energy above this frequency: a soft room rumble."""


def impact_gain(speed_m_s: float, radius_m: float) -> float:
    """Peak amplitude of an impact: concave in speed so soft taps stay audible; louder for big objects."""
    loudness = min(max(speed_m_s, 0.0) / FULL_SCALE_SPEED, 1.0) ** 0.7
    return PEAK_GAIN * loudness * (radius_m / REFERENCE_RADIUS_M) ** 0.3


def fundamental_hz(material: str, radius_m: float) -> float:
    """Fundamental frequency of an object: the material's, scaled as 1 / radius."""
    return MATERIAL_SOUNDS[material].base_hz * REFERENCE_RADIUS_M / radius_m


def synthesize_audio(meta: dict) -> np.ndarray:
    """The clip's soundtrack, float32 (1, S) in [-1, 1], ``S = round(duration * sample_rate)``.

    Contacts whose sound starts before the clip (negative times) or runs past its end are cut, not moved.
    """
    sample_rate = int(meta["sample_rate"])
    num_samples = round(float(meta["duration"]) * sample_rate)
    px_per_m = float(meta["scene"]["px_per_m"])
    settings = meta.get("audio", {})
    seed = int(settings.get("seed", 0))
    objects = {obj["id"]: obj for obj in meta["objects"]}
    audio = np.zeros(num_samples, np.float64)
    for index, contact in enumerate(meta["contacts"]):
        onset = round(float(contact["time"]) * sample_rate)
        members = [objects[i] for i in contact["objects"]]
        # two objects share the energy of one impact; each rings with its own modes
        share = 1.0 / np.sqrt(len(members)) if members else 0.0
        rng = np.random.default_rng([seed, index])
        for obj in members:
            radius_m = float(np.mean(obj["half_extent_px"])) / px_per_m
            gain = share * impact_gain(float(contact["speed"]) / px_per_m, radius_m)
            _add(audio, onset, _impact(obj["material"], radius_m, gain, sample_rate, rng))
    level = float(settings.get("ambience_level", 0.0))
    if level > 0:
        audio += _ambience(num_samples, sample_rate, level, seed)
    peak = np.abs(audio).max(initial=0.0)
    if peak > 0.98:  # a limiter instead of hard clipping: pile-ups of loud impacts stay undistorted
        audio *= 0.98 / peak
    return audio.astype(np.float32)[None]


def _impact(
    material: str, radius_m: float, gain: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One impact of one object: decaying modes below Nyquist plus a contact click, float64 (L,)."""
    spec = MATERIAL_SOUNDS[material]
    f0 = fundamental_hz(material, radius_m)
    decay = spec.decay_s * np.sqrt(radius_m / REFERENCE_RADIUS_M)  # bigger bodies ring longer
    length = int(5 * decay * sample_rate) + 1  # e^-5: below 1% of the onset amplitude
    signal = np.zeros(length)
    total_gain = spec.click
    for ratio, mode_gain in zip(spec.ratios, spec.gains):
        if ratio * f0 >= 0.45 * sample_rate:  # above Nyquist it would alias into a wrong pitch
            break
        tau = decay / np.sqrt(ratio)
        n = min(length, int(5 * tau * sample_rate) + 1)
        # Im(z^k), z = exp((-1/tau + 2 pi i f) / sr), is the damped sinusoid e^(-t/tau) sin(2 pi f t);
        # a running product makes it with one multiply per sample instead of an exp and a sin
        step = np.exp(complex(-1.0 / tau, 2 * np.pi * f0 * ratio) / sample_rate)
        powers = np.cumprod(np.full(n, step)) / step  # z^0 .. z^(n-1)
        signal[:n] += mode_gain * powers.imag
        total_gain += mode_gain
    clicks = min(length, int(8 * CLICK_TIME * sample_rate))
    signal[:clicks] += (
        spec.click * rng.standard_normal(clicks) * np.exp(-np.arange(clicks) / (CLICK_TIME * sample_rate))
    )
    return gain * signal / total_gain


def _add(audio: np.ndarray, onset: int, event: np.ndarray) -> None:
    """``audio[onset:onset + len(event)] += event``, cut at both ends of the clip."""
    start, stop = max(onset, 0), min(onset + len(event), len(audio))
    if stop > start:
        audio[start:stop] += event[start - onset : stop - onset]


def _ambience(num_samples: int, sample_rate: int, level: float, seed: int) -> np.ndarray:
    """A low rumble with RMS ``level``: white noise on a coarse time grid, linearly interpolated.

    Interpolating from a grid of ``2 * AMBIENCE_CUTOFF_HZ`` points per second low-passes the noise (a sinc^2
    spectrum) for the price of a few hundred random numbers, and keeps the AAC encoder fast.
    """
    rng = np.random.default_rng([seed, 2**31])  # a stream no contact index can collide with
    step = max(1, round(sample_rate / (2 * AMBIENCE_CUTOFF_HZ)))
    coarse = rng.standard_normal(num_samples // step + 2)
    noise = np.interp(np.arange(num_samples) / step, np.arange(len(coarse)), coarse)
    return level * noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)
