"""Caption forms mixed per sample: Sora and DALL-E 3 train on a mixture of dense and short captions, so the
model follows both a long description and a terse user prompt.

``caption_keys`` (a DataModule argument, ``data.caption_keys`` in the configs) maps a form to a probability,
e.g. ``{txt: 0.5, short: 0.5}``: ``txt`` is the sample's ``txt`` (the caption training uses by default), any
other name is the sample's json ``captions[name]`` (what ``recaption.run`` and the synthetic world write).
``None`` keeps today's behaviour exactly: the ``txt``, no draw, no extra meta.

The draw comes from the per-sample generator the stream hands every decoder
(:class:`~data_pipelines.shard_stream.ShardStream`: seeded by ``(seed, epoch, consumer, stream position)``,
the one that already picks windows and crops), taken after the decoder's own draws so a clip's window and
crop do not change when a mix is set. A checkpoint's data position therefore fixes every caption drawn after
it: exact resume stays exact, and a sample drawn again (a later epoch, a resampled stream) may get another
form. Validation reads epoch 0 every time, so its captions are the same at every validation.

A sample without the drawn form (no json ``captions``, no such name, or an empty text) falls back to its
``txt`` and is counted, never dropped: every item carries ``_counts`` (``caption_form/<used form>``, and
``caption_form_missing`` + ``caption_form_missing/<drawn form>`` on a fallback); the stream sums them per
batch into ``batch["_stats"]["counts"]``, :class:`~data_pipelines.stream_loader.StreamProgress` adds them
up (``DataModule.progress.counts``, kept in checkpoints) and
:class:`~data_pipelines.data_stats.DataStatsCallback` logs them as ``data/<name>``. The form used goes in
the sample's meta (``caption_form``; on a fallback also ``caption_form_missing`` = the form drawn), and a
sample trained on another form than its txt keeps the txt in ``caption_txt`` (the DiT's ``text_align`` pairs
the two forms of a clip).

Caption dropout for classifier-free guidance is not a data setting: the DiT module drops the text of a share
``curriculum.caption_dropout`` of the samples in every step, video and image steps alike
(:class:`sora.diffusion.flow.ConditioningCurriculum`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from data_pipelines.sample_errors import StreamConfigError

TXT = "txt"
MISSING = "caption_form_missing"


class CaptionMix:
    """Validated, normalised ``{form: probability}``; :meth:`apply` picks one form per item.

    Raises ValueError for an empty mapping, a form name that is not a non-empty string, a probability that is
    not a finite number >= 0, or probabilities that sum to 0.
    """

    def __init__(self, caption_keys: Mapping[str, float]) -> None:
        if not isinstance(caption_keys, Mapping) or not caption_keys:
            raise ValueError(
                "caption_keys must be a non-empty mapping {form: probability} (e.g. {txt: 0.5, short: 0.5}) "
                f"or null, got {caption_keys!r}"
            )
        probs: dict[str, float] = {}
        for form, p in caption_keys.items():
            if not isinstance(form, str) or not form.strip():
                raise ValueError(f"caption_keys: a form name must be a non-empty string, got {form!r}")
            try:
                value = float(p)
            except (TypeError, ValueError):
                raise ValueError(
                    f"caption_keys.{form}: the probability must be a number, got {p!r}"
                ) from None
            if isinstance(p, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"caption_keys.{form}: the probability must be a finite number >= 0, got {p!r}"
                )
            probs[form] = value
        total = sum(probs.values())
        if total <= 0:
            raise ValueError(f"caption_keys: the probabilities must sum to more than 0, got {dict(probs)}")
        self.probs = {form: p / total for form, p in probs.items()}  # normalised, in the order given
        self.forms = tuple(form for form, p in self.probs.items() if p > 0)
        cumulative = np.cumsum([self.probs[f] for f in self.forms])
        cumulative[-1] = 1.0  # no rounding gap above the last form
        self._cumulative = cumulative

    @classmethod
    def from_config(cls, caption_keys: Mapping[str, float] | None) -> CaptionMix | None:
        """``None`` (the default: the ``txt`` only) or a validated mix."""
        return None if caption_keys is None else cls(caption_keys)

    @property
    def switches(self) -> bool:
        """Whether a form other than ``txt`` can be drawn."""
        return any(form != TXT for form in self.forms)

    def draw(self, rng: np.random.Generator) -> str:
        """One form, with the mix's probabilities (one uniform number from ``rng``)."""
        return self.forms[int(np.searchsorted(self._cumulative, rng.random(), side="right"))]

    def apply(self, item: dict, rng: np.random.Generator) -> dict:
        """Replace ``item["caption"]`` (the sample's txt) by a drawn form from ``item["meta"]["captions"]``,
        falling back to the txt when the sample lacks it; records the form in the meta and the counts in
        ``item["_counts"]``. Returns ``item``."""
        drawn = self.draw(rng)
        counts = item.setdefault("_counts", {})
        used, text = TXT, item["caption"]
        if drawn != TXT:
            captions = item["meta"].get("captions")
            candidate = captions.get(drawn) if isinstance(captions, Mapping) else None
            if isinstance(candidate, str) and candidate.strip():
                item["meta"]["caption_txt"] = text  # the txt it replaces (the DiT's text_align pairs them)
                used, text = drawn, candidate.strip()
            else:
                item["meta"]["caption_form_missing"] = drawn
                counts[MISSING] = counts.get(MISSING, 0) + 1
                counts[f"{MISSING}/{drawn}"] = counts.get(f"{MISSING}/{drawn}", 0) + 1
        item["caption"] = text
        item["meta"]["caption_form"] = used
        counts[f"caption_form/{used}"] = counts.get(f"caption_form/{used}", 0) + 1
        return item

    def check_stored_text(self, sample: Mapping) -> None:
        """Latent shards with precomputed text embeddings hold those of the ``txt`` only (a frozen text
        encoder at ``data_pipelines.latents`` time): a mix that can draw another form would pair one caption
        with another caption's embedding, so it stops the stream with a clear error instead."""
        if "text_emb.npy" in sample and self.switches:
            others = sorted(form for form in self.forms if form != TXT)
            raise StreamConfigError(
                f"caption_keys draws {others}, but latent sample {sample.get('__key__')!r} of "
                f"{sample.get('__url__')} stores text embeddings of its txt only (encoded with a frozen text "
                "encoder); they cannot follow another caption form. Encode the latents without "
                "text.encoder (captions only: the DiT encodes the drawn caption itself), or set "
                "data.caption_keys to null (or {txt: 1.0})"
            )
