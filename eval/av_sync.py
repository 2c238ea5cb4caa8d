"""Audio-video synchronisation: AV-Align, and onset precision/recall/F1/offset against ground-truth contacts.

* ``av_align`` — AV-Align (Yariv et al. 2024, "Diverse and Aligned Audio-to-Video Generation via Text-to-Video
  Model Adaptation", reference code ``guyyariv/TempoTokens/av_align.py``): audio peaks are onsets of the
  audio; video peaks are local maxima (above 0.1 px) of the mean optical-flow magnitude between consecutive
  frames (Farneback, same parameters as the reference code; the value at frame ``i`` is the flow from ``i-1``
  to ``i``, at time ``i / fps``); the score is ``|matched| / (|A| + |V| - |matched|)`` with a match when an
  audio peak lies strictly within ``1/fps`` of a video peak. Range ``[0, 1]``, higher is better; 0 when either
  side has no peak. Matching is one-to-one (each video peak is used at most once), as in the reference code
  since its February 2025 update (earlier versions let one video peak match several audio peaks, which could
  push the score above 1 for dense onsets). **Departure:** onsets come from our librosa-free detector below
  instead of ``librosa.onset.onset_detect`` (same recipe, 16 kHz, 10 ms hop instead of 22.05 kHz, 23 ms hop).
* :func:`audio_onsets` — librosa's recipe: log-power mel spectrogram (dB, 80 dB floor), spectral flux
  (positive first difference averaged over mel bands), envelope normalised to ``[0, 1]``, then librosa
  ``peak_pick`` with pre_max 30 ms, post_max 10 ms, pre_avg 100 ms, post_avg 110 ms, delta 0.07, wait 30 ms.
  **Departure:** an onset is kept only if the RMS level (32 ms windows) reaches :data:`ONSET_GATE_DB`
  (-40 dBFS) within 30 ms after it, because the normalisation otherwise turns the background hiss of a quiet
  or silent clip into onsets. Onsets come out ~10 ms early (the 32 ms window hears an attack before its
  centre reaches it), well inside one frame.
* ``onset_sync`` — ours, synthetic world: detected audio onsets against the ground-truth contact times
  (``meta["contacts"]``; contacts less than 50 ms apart are one audible event), one-to-one greedy matching
  within one frame (``1/fps``).
  Reports ``onset_precision``, ``onset_recall``, ``onset_f1`` (``[0, 1]``, higher is better),
  ``onset_abs_offset_s`` (mean |audio - contact| over matches, ``[0, 1/fps]``, lower is better; the tolerance
  when nothing matches, 0 for a silent clip without contacts) and ``onset_offset_s`` (:func:`estimate_offset`:
  the constant lag of the sound behind the picture that best explains the onsets, positive = sound late;
  ``[-0.5, 0.5]`` s, 0 is best; absent from ``onset_sync`` without onsets or contacts). It never looks at
  the video: it is the agreement of the sound with the ground-truth timeline, not audio-video sync of the
  clip.
* ``sync`` — ours, real audio-video sync of the clip itself, no ground truth needed: contact events are
  detected FROM THE VIDEO (:func:`video_impacts`: the colour tracker's objects, a velocity component that
  reverses with at least :data:`IMPACT_MIN_SPEED` (15 px/s) on both sides of a frame, or a velocity change
  beyond gravity of at least :data:`IMPACT_MIN_DV` (45 px/s) between consecutive frame pairs; events of all
  objects closer than 50 ms are one) and matched one-to-one against the audio onsets of the same clip within
  one frame (``1/fps``). ``sync_f1`` (``[0, 1]``, higher is better) is the F1 of onsets (precision: onsets
  with a visible impact) against impacts (recall: impacts that are heard); a clip with impacts and no onset
  (silenced) or onsets and no impact (a frozen or blank video) scores 0; a clip with neither (a still scene)
  has no such content and the key is absent. ``sync_lag_s`` (:func:`estimate_offset`, sound behind picture
  positive, ``[-0.5, 0.5]`` s) is present when some lag matches. ``sync_impacts`` / ``sync_onsets`` count
  both sides. On the world's ground truth after H.264 it is ~0.75-1 where things fly (the video misses the
  softest bumps, e.g. a rolling ball's final 26 px/s tap), and a 200 ms shift drops it to ~0.2.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from eval.clip import EvalClip, MissingInput
from eval.temporal import farneback_flow
from eval.tracking import gravity_px, track_clip

ONSET_RATE, ONSET_N_FFT, ONSET_HOP, ONSET_MELS = 16000, 512, 160, 64
FLOW_PEAK_THRESHOLD = 0.1  # px, the reference implementation's threshold on the mean flow magnitude
ONSET_GATE_DB = -40.0  # dBFS: onsets quieter than this (within 30 ms after them) are background noise
OFFSET_WINDOW_S = 0.5
MERGE_CONTACTS_S = 0.05
IMPACT_MIN_SPEED, IMPACT_MIN_DV = 15.0, 45.0  # px/s


@lru_cache(maxsize=1)
def _onset_mel():
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=ONSET_RATE, n_fft=ONSET_N_FFT, hop_length=ONSET_HOP, n_mels=ONSET_MELS, power=2.0
    )


def onset_envelope(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Spectral-flux onset strength ``(frames,)`` at 100 frames/s, normalised to ``[0, 1]``."""
    from sora.media import resample_audio, to_mono

    x = resample_audio(to_mono(audio), int(sample_rate), ONSET_RATE)
    mel = _onset_mel()(x)[0]  # (mels, frames)
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    db = torch.maximum(db, db.max() - 80.0)
    flux = torch.zeros(db.shape[1])
    flux[1:] = (db[:, 1:] - db[:, :-1]).clamp_min(0).mean(dim=0)
    env = flux.numpy().astype(np.float64)
    env -= env.min()
    return env / env.max() if env.max() > 0 else env


def peak_pick(
    x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float, wait: int
) -> np.ndarray:
    """librosa ``peak_pick``: indices ``n`` with ``x[n] == max(x[n-pre_max:n+post_max])``,
    ``x[n] >= mean(x[n-pre_avg:n+post_avg]) + delta`` and more than ``wait`` samples after the previous
    peak."""
    peaks, last = [], -np.inf
    for n in range(len(x)):
        lo_m, hi_m = max(0, n - pre_max), min(len(x), n + post_max)
        lo_a, hi_a = max(0, n - pre_avg), min(len(x), n + post_avg)
        if x[n] == x[lo_m:hi_m].max() and x[n] >= x[lo_a:hi_a].mean() + delta and n - last > wait:
            peaks.append(n)
            last = n
    return np.asarray(peaks, dtype=int)


def frame_level_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level in dBFS of ``ONSET_N_FFT``-sample windows centred on the onset frames ``(frames,)``."""
    from sora.media import resample_audio, to_mono

    x = resample_audio(to_mono(audio), int(sample_rate), ONSET_RATE)[0].numpy().astype(np.float64)
    x = np.pad(x, ONSET_N_FFT // 2)
    windows = np.lib.stride_tricks.sliding_window_view(x, ONSET_N_FFT)[::ONSET_HOP]
    return 10.0 * np.log10(np.mean(windows**2, axis=1) + 1e-12)


def audio_onsets(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times in seconds of ``(1, S)`` audio (librosa's ``onset_detect`` recipe plus a loudness gate)."""
    env = onset_envelope(audio, sample_rate)
    level = frame_level_db(audio, sample_rate)
    per_s = ONSET_RATE / ONSET_HOP
    frames = peak_pick(
        env,
        pre_max=round(0.03 * per_s),
        post_max=1,
        pre_avg=round(0.10 * per_s),
        post_avg=round(0.10 * per_s) + 1,
        delta=0.07,
        wait=round(0.03 * per_s),
    )
    gate = round(0.03 * per_s)
    loud = [f for f in frames if level[f : f + gate + 1].max(initial=-np.inf) >= ONSET_GATE_DB]
    return np.asarray(loud, dtype=np.float64) / per_s


def flow_trajectory(video: np.ndarray) -> np.ndarray:
    """Mean Farneback flow magnitude ``(T,)``: entry ``i`` is flow ``i-1 -> i``, entry 0 repeats entry 1."""
    mags = [
        float(np.linalg.norm(farneback_flow(a, b), axis=-1).mean()) for a, b in zip(video[:-1], video[1:])
    ]
    return np.asarray(mags[:1] + mags)


def video_peaks(video: np.ndarray, fps: float) -> np.ndarray:
    """Times in seconds of strict local maxima of :func:`flow_trajectory` above
    :data:`FLOW_PEAK_THRESHOLD`."""
    traj = flow_trajectory(video)
    i = np.arange(1, len(traj) - 1)
    keep = (traj[i - 1] < traj[i]) & (traj[i] > traj[i + 1]) & (traj[i] > FLOW_PEAK_THRESHOLD)
    return i[keep] / fps


def match_events(
    pred: np.ndarray, ref: np.ndarray, tolerance: float, strict: bool = False
) -> list[tuple[int, int]]:
    """One-to-one greedy matching of event times, closest pairs first; returns ``(pred_idx, ref_idx)`` pairs
    whose distance is ``<= tolerance`` (``< tolerance`` if ``strict``)."""
    if len(pred) == 0 or len(ref) == 0:
        return []
    dist = np.abs(np.asarray(pred)[:, None] - np.asarray(ref)[None, :])
    pairs, used_p, used_r = [], set(), set()
    for flat in np.argsort(dist, axis=None, kind="stable"):
        p, r = divmod(int(flat), dist.shape[1])
        d = dist[p, r]
        if d > tolerance or (strict and d >= tolerance):
            break
        if p not in used_p and r not in used_r:
            pairs.append((p, r))
            used_p.add(p)
            used_r.add(r)
    return pairs


def av_align_score(audio_peaks: np.ndarray, video_peak_times: np.ndarray, fps: float) -> float:
    """AV-Align IoU between audio and video peak times (one-to-one, within ``1/fps``), ``[0, 1]``, higher is
    better."""
    matched = len(match_events(audio_peaks, video_peak_times, 1.0 / fps, strict=True))
    union = len(audio_peaks) + len(video_peak_times) - matched
    return matched / union if union > 0 else 0.0


def av_align(clip: EvalClip) -> dict[str, float]:
    """``{"av_align": [0, 1] higher better, "audio_peaks": count, "video_peaks": count}`` for a clip with
    sound."""
    a = audio_onsets(clip.require_audio("av_align"), clip.sample_rate)
    v = video_peaks(clip.video, clip.fps)
    return {
        "av_align": av_align_score(a, v, clip.fps),
        "audio_peaks": float(len(a)),
        "video_peaks": float(len(v)),
    }


def contact_times(meta: dict, merge_within: float = MERGE_CONTACTS_S) -> np.ndarray:
    """Sorted ground-truth contact times in seconds, merging contacts closer than ``merge_within`` s."""
    times = np.sort(np.asarray([c["time"] for c in meta.get("contacts", [])], dtype=np.float64))
    if len(times) == 0:
        return times
    merged = [times[0]]
    for t in times[1:]:
        if t - merged[-1] > merge_within:  # closer events are one sound to the ear and to onset detection
            merged.append(t)
    return np.asarray(merged)


def onset_scores(onsets: np.ndarray, contacts: np.ndarray, fps: float) -> dict[str, float]:
    """Precision/recall/F1 and offsets of detected onsets against contact times (see module docstring)."""
    tol = 1.0 / fps
    pairs = match_events(onsets, contacts, tol)
    tp = len(pairs)
    precision = tp / len(onsets) if len(onsets) else float(len(contacts) == 0)
    recall = tp / len(contacts) if len(contacts) else float(len(onsets) == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if pairs:
        abs_offset = float(np.mean([abs(onsets[p] - contacts[r]) for p, r in pairs]))
    else:  # nothing to match is perfect, nothing matched is as bad as the tolerance
        abs_offset = 0.0 if len(onsets) == 0 and len(contacts) == 0 else tol
    return {
        "onset_precision": precision,
        "onset_recall": recall,
        "onset_f1": f1,
        "onset_abs_offset_s": abs_offset,
        "onset_offset_s": estimate_offset(onsets, contacts, tol),
    }


def estimate_offset(onsets: np.ndarray, contacts: np.ndarray, tolerance: float) -> float:
    """Constant lag (s) of the onsets behind the contacts: the lag in +-0.5 s (5 ms grid) under which the most
    onsets match a contact within ``tolerance / 2`` (ties: the smallest |lag|), refined by the mean residual
    of those matches. NaN when no lag matches anything."""
    if len(onsets) == 0 or len(contacts) == 0:
        return float("nan")
    lags = np.arange(-OFFSET_WINDOW_S, OFFSET_WINDOW_S + 1e-9, 0.005)
    counts = [len(match_events(onsets - lag, contacts, tolerance / 2)) for lag in lags]
    if max(counts) == 0:
        return float("nan")
    best = min((lag for lag, c in zip(lags, counts) if c == max(counts)), key=abs)
    pairs = match_events(onsets - best, contacts, tolerance / 2)
    return float(best + np.mean([onsets[p] - best - contacts[r] for p, r in pairs]))


def onset_sync(clip: EvalClip) -> dict[str, float]:
    """Onset scores of a synthetic-world clip's audio against its ground-truth contacts."""
    meta = clip.require_meta("onset_sync")
    audio = clip.require_audio("onset_sync")
    if "contacts" not in meta:
        raise MissingInput("onset_sync needs meta['contacts']")
    scores = onset_scores(audio_onsets(audio, clip.sample_rate), contact_times(meta), clip.fps)
    if np.isnan(scores["onset_offset_s"]):  # no lag explains anything: absent, not NaN
        del scores["onset_offset_s"]
    return scores


def _merge(times: np.ndarray, within: float = MERGE_CONTACTS_S) -> np.ndarray:
    """Sorted times with events closer than ``within`` s to the previous kept one dropped."""
    merged: list[float] = []
    for t in np.sort(times):
        if not merged or t - merged[-1] > within:
            merged.append(float(t))
    return np.asarray(merged)


def video_impacts(clip: EvalClip) -> np.ndarray:
    """Times (s) of impacts seen in the video (see module docstring): per tracked object and axis, with
    ``v[t] = (p[t+1] - p[t]) fps``, frame ``t`` is an impact when ``v[t-1]`` and ``v[t]`` have opposite signs
    and both magnitudes reach :data:`IMPACT_MIN_SPEED`, or ``|v[t] - v[t-1] - a / fps|`` (``a`` gravity on
    the vertical axis) reaches :data:`IMPACT_MIN_DV`; the object must be seen in frames ``t-1, t, t+1``."""
    g = gravity_px(clip)
    times = []
    for tr in track_clip(clip).values():
        seen = tr.visible[:-2] & tr.visible[1:-1] & tr.visible[2:]  # (T-2,): frames 1..T-2
        for p, accel in ((tr.x, 0.0), (tr.y, g)):
            v = np.diff(p) * clip.fps  # (T-1,)
            a, b = v[:-1], v[1:]
            reverse = (
                (np.sign(a) != np.sign(b)) & (np.abs(a) >= IMPACT_MIN_SPEED) & (np.abs(b) >= IMPACT_MIN_SPEED)
            )
            jump = np.abs(b - a - accel / clip.fps) >= IMPACT_MIN_DV
            times += list((np.flatnonzero(seen & (reverse | jump)) + 1) / clip.fps)
    return _merge(np.asarray(times))


def sync(clip: EvalClip) -> dict[str, float]:
    """Audio-video sync of the clip itself: audio onsets against impacts seen in its video (see module
    docstring). Raises :class:`MissingInput` without audio; returns ``{}`` for a clip with neither."""
    onsets = audio_onsets(clip.require_audio("sync"), clip.sample_rate)
    impacts = video_impacts(clip)
    out = {"sync_impacts": float(len(impacts)), "sync_onsets": float(len(onsets))}
    if len(onsets) == 0 and len(impacts) == 0:
        return out  # nothing happens and nothing is heard: no such content, no sync_f1
    scores = onset_scores(onsets, impacts, clip.fps)
    out["sync_f1"] = scores["onset_f1"]
    out["sync_precision"], out["sync_recall"] = scores["onset_precision"], scores["onset_recall"]
    if not np.isnan(scores["onset_offset_s"]):
        out["sync_lag_s"] = scores["onset_offset_s"]
    return out
