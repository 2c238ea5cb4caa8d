"""Sound level: ``loudness_db`` of the clip and ``loudness_diff_db`` against its reference.

Generated audio can be much quieter than the ground truth (the world's impacts are around -25 dBFS RMS) and no
sync or onset score shows it, because onsets are found after normalising the envelope. So:

* ``loudness_db`` — the RMS level of the whole track, ``20 log10(sqrt(mean(x^2)))`` in dBFS (a full-scale
  square wave is 0 dBFS, a full-scale sine -3 dBFS), floored at :data:`SILENCE_DB` (-100 dBFS) so digital
  silence is a number, not ``-inf``. Higher is louder; compare it with the ground truth's.
* ``loudness_diff_db`` — ``loudness_db`` of the clip minus that of ``clip.reference`` (the ground truth it
  should reproduce), present when the clip has a reference with sound: negative means too quiet, 0 is best.
  ``loudness_abs_diff_db`` is its magnitude (lower is better).

The set-level companion, an audio Fréchet distance on log-mel statistics, is
:func:`eval.frechet.audio_frechet_distance` (``audio_fd``).
"""

from __future__ import annotations

import numpy as np

from eval.clip import EvalClip

SILENCE_DB = -100.0


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dBFS of float audio in ``[-1, 1]`` (any shape), floored at :data:`SILENCE_DB`."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size == 0:
        raise ValueError("loudness needs at least one audio sample")
    rms = float(np.sqrt(np.mean(audio**2)))
    return max(20.0 * np.log10(rms), SILENCE_DB) if rms > 0 else SILENCE_DB


def loudness(clip: EvalClip) -> dict[str, float]:
    """``loudness_db`` (dBFS) and, with a reference that has sound, ``loudness_diff_db`` /
    ``loudness_abs_diff_db`` (dB); see module docstring."""
    level = rms_dbfs(clip.require_audio("loudness"))
    out = {"loudness_db": level}
    ref = clip.reference
    if ref is not None and ref.audio is not None and ref.audio.size:
        diff = level - rms_dbfs(ref.audio)
        out.update(loudness_diff_db=diff, loudness_abs_diff_db=abs(diff))
    return out
