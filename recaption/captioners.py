"""Captioners that need no model: the synthetic world's ground truth, and a pass-through of the caption.

- :class:`GroundTruthCaptioner` writes the world's own captions from the metadata a synthetic-world shard
  carries (``objects``, ``tracks``, ``contacts``, ``start``...): ``dense`` (the world's varied caption, the
  one in ``txt``), ``short`` ("a red ball on the left falls") and ``structured`` (every object's size,
  colour, shape, start side, motion and bounces, then every impact sound with its time and loudness). All
  three come back in ``Caption.forms``; ``form`` picks the one for ``txt``.
- :class:`PassthroughCaptioner` keeps the caption the clip has (to give old shards the json fields of a
  recaptioned one, or to test the job); an empty caption is a failure like any other.

The vision-language captioner (``recaption.hf``) and the weight-free pixel captioner (``recaption.pixel``)
live in their own files; :func:`recaption.registry.build_captioner` builds any of them by name.
"""

from __future__ import annotations

from data_pipelines.synthetic.captions import caption_forms
from recaption.base import Caption, Captioner, CaptionError, CaptionInput

FORMS = ("dense", "short", "structured")
GROUND_TRUTH_KEYS = ("objects", "tracks", "contacts", "start", "scene")


class GroundTruthCaptioner(Captioner):
    """Captions from the synthetic world's ground truth in the clip's json (no pixels are looked at).

    Args:
        form: which form goes into ``txt``: ``dense``, ``short`` or ``structured``.
    """

    name = "ground_truth"
    version = "1"

    def __init__(self, form: str = "dense") -> None:
        if form not in FORMS:
            raise ValueError(f"ground_truth captioner: form must be one of {list(FORMS)}, got {form!r}")
        self.form = form

    def caption_batch(self, clips: list[CaptionInput]) -> list[Caption]:
        return [self._one(clip) for clip in clips]

    def _one(self, clip: CaptionInput) -> Caption:
        missing = [k for k in GROUND_TRUTH_KEYS if k not in clip.meta]
        if missing:
            raise CaptionError(
                f"clip {clip.key!r}: its json has no synthetic-world ground truth (missing {missing}); "
                "the ground_truth captioner only captions data_pipelines.synthetic shards"
            )
        meta = clip.meta
        if "caption" not in meta:  # a world json without its dense caption: the txt is that caption
            meta = {**meta, "caption": clip.caption}
        try:
            forms = caption_forms(meta)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CaptionError(
                f"clip {clip.key!r}: unreadable ground truth: {type(exc).__name__}: {exc}"
            ) from exc
        if not forms[self.form].strip():
            raise CaptionError(f"clip {clip.key!r}: the ground truth has no {self.form} caption")
        return Caption(text=forms[self.form], forms=forms)

    def describe(self) -> dict:
        return {**super().describe(), "form": self.form}


class PassthroughCaptioner(Captioner):
    """Keeps the clip's current caption; a clip without one raises :class:`CaptionError`."""

    name = "passthrough"
    version = "1"

    def caption_batch(self, clips: list[CaptionInput]) -> list[Caption]:
        out = []
        for clip in clips:
            if not clip.caption.strip():
                raise CaptionError(f"clip {clip.key!r} has no caption to pass through")
            out.append(Caption(text=clip.caption))
        return out
