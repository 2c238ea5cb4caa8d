"""What a sample decoder may raise, and the error a stream raises when nothing in it is usable."""

from __future__ import annotations


class SampleError(Exception):
    """A sample that cannot be used; ``reason`` is the counter it is recorded under."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class Filtered(Exception):
    """A good sample that no bucket takes (too small, too short, or not kept by ``keep_prob``).

    ``by_chance``: a bucket fitted but lost its ``keep_prob`` draw, so another draw may keep the sample.
    """

    def __init__(self, message: str = "", by_chance: bool = False) -> None:
        super().__init__(message)
        self.by_chance = by_chance


class NoUsableSamplesError(ValueError):
    """A stream whose shards give no usable sample: every one was skipped (corrupt, undecodable) or filtered.

    Raised instead of looping forever (``resampled=True``) or yielding empty epochs; the message names the
    shards and the counts by reason.
    """


class StreamConfigError(ValueError):
    """The run's settings cannot read these shards at all (not one bad sample): a decoder raises it and the
    stream stops with it, instead of counting every sample as skipped. E.g. ``caption_keys`` asking latent
    shards with precomputed text embeddings for another caption form
    (:meth:`data_pipelines.caption_forms.CaptionMix.check_stored_text`)."""
