"""Applying a captioner to clips: batching, retries, checks on what comes back, and the json it leaves.

The one code path shared by the batch job (``recaption.run``) and ingest (``captioner=``):

- :func:`caption_clips` calls ``caption_batch`` on a batch; when the batch raises it retries the clips one
  by one, so one bad clip costs only itself. Every clip gets an :class:`Outcome`: a checked caption, or the
  reason it has none (the clip then keeps its original caption, and the job counts and names it).
- :func:`recaptioned_meta` is the sample json after recaptioning: ``caption_original`` (what ``txt`` held
  before ANY recaptioning, "" when nothing), ``captioner`` (name, version, options) and ``captions``
  (every form the captioner wrote, including the one now in ``txt``); a json that had other ``captions``
  (the synthetic world's ground-truth forms) keeps them under ``captions_original``.
"""

from __future__ import annotations

from dataclasses import dataclass

from recaption.base import Caption, Captioner, CaptionError, CaptionInput

FAILURE_REASONS = ("caption_error", "exception", "empty", "not_utf8", "bad_output")
"""Why a clip kept its original caption: the captioner raised CaptionError (it cannot caption this clip) or
another exception, wrote nothing, wrote text that is not valid UTF-8 (lone surrogates, U+FFFD from
undecodable bytes), or returned something that is not a Caption of strings."""


@dataclass
class Outcome:
    """A clip's caption, or why it has none (``reason`` one of :data:`FAILURE_REASONS`)."""

    caption: Caption | None = None
    reason: str | None = None
    message: str = ""


def check_caption(caption: object) -> Outcome:
    """``Outcome(caption)`` when ``caption`` is a usable Caption, else the reason it is not."""
    if not isinstance(caption, Caption):
        return Outcome(reason="bad_output", message=f"not a Caption: {type(caption).__name__}")
    if not isinstance(caption.forms, dict):
        return Outcome(reason="bad_output", message=f"forms is a {type(caption.forms).__name__}, not a dict")
    for name, text in [("text", caption.text), *((f"forms[{k!r}]", v) for k, v in caption.forms.items())]:
        if not isinstance(text, str):
            return Outcome(reason="bad_output", message=f"{name} is {type(text).__name__}, not str")
        if not text.strip():
            return Outcome(reason="empty", message=f"{name} is empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return Outcome(reason="not_utf8", message=f"{name}: {exc}")
        if "\ufffd" in text:
            return Outcome(reason="not_utf8", message=f"{name} holds U+FFFD (bytes that were not UTF-8)")
    return Outcome(caption=Caption(text=caption.text.strip(), forms=dict(caption.forms)))


def _failure(exc: Exception) -> Outcome:
    reason = "caption_error" if isinstance(exc, CaptionError) else "exception"
    return Outcome(reason=reason, message=f"{type(exc).__name__}: {exc}"[:500])


def caption_clips(captioner: Captioner, clips: list[CaptionInput]) -> list[Outcome]:
    """One :class:`Outcome` per clip, in order; never raises for a failing clip (``Exception``s only: an
    interrupt still stops the job)."""
    if not clips:
        return []
    try:
        captions = captioner.caption_batch(clips)
        if not isinstance(captions, list) or len(captions) != len(clips):
            got = len(captions) if isinstance(captions, list) else type(captions).__name__
            raise ValueError(f"caption_batch returned {got} captions for {len(clips)} clips")
    except Exception:  # noqa: BLE001 - retried one by one below, so the failing clip is named
        if len(clips) == 1:
            return [_one(captioner, clips[0])]
        return [_one(captioner, clip) for clip in clips]
    return [check_caption(c) for c in captions]


def _one(captioner: Captioner, clip: CaptionInput) -> Outcome:
    try:
        captions = captioner.caption_batch([clip])
    except Exception as exc:  # noqa: BLE001 - one clip's failure is its outcome
        return _failure(exc)
    if not isinstance(captions, list) or len(captions) != 1:
        return Outcome(reason="bad_output", message=f"caption_batch returned {captions!r:.100} for one clip")
    return check_caption(captions[0])


def recaptioned_meta(meta: dict, original_caption: str, captioner: Captioner, caption: Caption) -> dict:
    """The json of a sample whose ``txt`` becomes ``caption.text`` (see the module docstring)."""
    forms = dict(caption.forms)
    if caption.text not in forms.values():
        forms[captioner.name] = caption.text
    out = {**meta, "caption_original": meta.get("caption_original", original_caption)}
    if "captions" in meta and "captions_original" not in meta and meta["captions"] != forms:
        out["captions_original"] = meta["captions"]
    out["captioner"] = captioner.describe()
    out["captions"] = forms
    return out
