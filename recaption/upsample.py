"""Prompt upsampling: a short user prompt -> a caption like the training captions (DALL-E 3, Sora).

Two :class:`PromptUpsampler` s, both deterministic per ``seed`` and both keeping every object, colour and side
the user named (checked with :func:`recaption.prompt_facts.facts`):

- :class:`TemplateUpsampler` (weight-free, the default): built from training captions (a list, or the ``txt``
  and json ``captions`` of shards). It parses the prompt with the world's vocabulary into objects (size,
  colour, material, noun), the side phrases that follow each, and a relation ("left of"); for each object it
  picks the nearest training sentence about one object whose side slots have the same kinds (most content
  words in common with the user's words for that object; ties drawn with the seed) and fills its slots with
  the user's words; a relation gets a training relation sentence; with the seed's dice it adds one
  sentence that names no object (the sound, the backdrop). Words the user wrote that the result lacks
  (unknown words included) are appended (``Also: ...``), never dropped. If the filled text would not state
  exactly the user's objects, colours and sides, the object's sentence is the user's own clause instead.
- :class:`LMUpsampler`: a causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``, a local folder, never a
  download) prompted with an instruction template; sampled with the seed. When its text drops or adds an
  object, colour or side of the prompt, the result falls back to the template upsampler (counted in
  ``fallbacks``); words of the prompt it lacks are appended as above.

Without a captions path, the template upsampler's captions are those of the world's caption grammar:
:func:`world_captions` generates ``num_captions`` clips of ``data_pipelines.synthetic`` with a fixed seed
(an export carries no training captions; give ``captions=`` to use a dataset's own).
"""

from __future__ import annotations

import abc
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recaption.prompt_facts import (
    Facts,
    NounPhrase,
    SidePhrase,
    content_words,
    facts,
    noun_phrases,
    side_phrases,
    words,
)

UPSAMPLERS = ("template", "lm")
DEFAULT_LM_INSTRUCTION = (
    "Rewrite the short video prompt as one detailed caption in the style of the training captions. "
    "Keep every object, colour and side it names.\nPrompt: {prompt}\nCaption:"
)
_SENTENCE = re.compile(r"[^.!?]+[.!?]?")
_OBJ, _H, _V = "\x00O\x00", "\x00H\x00", "\x00V\x00"  # slot marks in a template (never in real text)


class PromptUpsampler(abc.ABC):
    """A short prompt -> a caption like the training captions; the same (prompt, seed) gives the same text."""

    name: str = "upsampler"

    @abc.abstractmethod
    def upsample(self, prompt: str, seed: int = 0) -> str:
        """The upsampled prompt (never empty; every object, colour and side of ``prompt`` kept)."""

    def describe(self) -> dict:
        return {"name": self.name}


# ---- training captions -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def world_captions(num_captions: int = 200, seed: int = 0) -> tuple[str, ...]:
    """Captions of ``num_captions`` synthetic-world clips (seeds ``clip_seed(seed, i)``): the caption grammar
    the embedded quickstart model was trained on (cached: the clips are simulated once per process)."""
    from data_pipelines.synthetic import WorldConfig, clip_seed, generate_clip

    config = WorldConfig(duration=1.0)
    return tuple(generate_clip(config, clip_seed(seed, i)).caption for i in range(num_captions))


def shard_captions(urls: str | list[str]) -> tuple[list[str], dict[str, int]]:
    """Every caption in shards: each sample's ``txt`` and the values of its json ``captions``; returns
    ``(captions, skipped)`` with what could not be read counted by reason (nothing is dropped silently)."""
    from data_pipelines.shard_reader import expand_urls, read_shards

    skipped: dict[str, int] = {}

    def skip(reason: str, where: str, message: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    out: list[str] = []
    for sample in read_shards(expand_urls(urls), skip):
        try:
            if "txt" in sample:
                out.append(sample["txt"].decode("utf-8"))
            if "json" in sample:
                forms = json.loads(sample["json"]).get("captions") or {}
                out += [v for v in forms.values() if isinstance(v, str)]
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            skipped["unreadable_caption"] = skipped.get("unreadable_caption", 0) + 1
    captions = [c.strip() for c in out if c.strip()]
    if not captions:
        raise ValueError(f"no captions in {urls!r} (skipped: {skipped})")
    return captions, skipped


# ---- templates ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """A training sentence with its object and side phrases replaced by slots.

    ``text`` holds one ``_OBJ`` per object (first mention; a relation sentence has two) and the side phrases
    with ``_H`` / ``_V`` where the sides were; ``sides`` the kinds of those phrases in order; ``defaults`` the
    size and material words of the original object (kept when the user gives none); ``words`` its
    content words (for nearness)."""

    text: str
    kind: str  # "object", "relation" or "extra" (names no object, colour or side)
    sides: tuple
    side_texts: tuple[str, ...]
    defaults: tuple[str | None, str | None]
    words: frozenset


def _mask(sentence: str) -> Template | None:
    """The template of a training sentence, or None when it is not one we can fill (a later mention, a
    second object outside a relation, a colour outside an object, an unknown side word)."""
    low = sentence.strip().lower()
    nps, sides = noun_phrases(low), side_phrases(low)
    f = facts(low)
    relation = [s for s in sides if s.kind == "relation"]
    if not nps:
        if f.colours or f.sides:
            return None
        return Template(sentence.strip(), "extra", (), (), (None, None), frozenset(content_words(low)))
    if any(p.colour is None for p in nps):
        return None
    if len(nps) == 2 and len(relation) == 1 and len(sides) == 1:
        kind = "relation"
    elif len(nps) == 1 and not relation and nps[0].article in ("a", "an"):
        kind = "object"  # a first mention ("a red ball ..."), not a later one ("Then the red ball ...")
    else:
        return None
    spans: list[tuple[int, int, str]] = [(p.start, p.end, _OBJ) for p in nps]
    side_texts = []
    for s in sides:
        text = s.text
        if s.horizontal is not None:
            text = re.sub(r"\b(left|right|centre|center|middle)(?=\b|wards)", _H, text, count=1)
        if s.vertical is not None:
            text = re.sub(r"\b(top|bottom|upper|lower)\b", _V, text, count=1)
        spans.append((s.start, s.end, text))
        side_texts.append(text)
    out, last = [], 0
    for start, end, text in sorted(spans):
        if start < last:
            return None  # an object inside a side phrase: not a shape we fill
        out += [low[last:start], text]
        last = end
    out.append(low[last:])
    masked = "".join(out)
    if facts(masked).colours or facts(masked).sides or noun_phrases(masked):
        return None  # a fact outside every slot
    first = nps[0]
    return Template(
        text=masked,
        kind=kind,
        sides=tuple(s.key for s in sides),
        side_texts=tuple(side_texts),
        defaults=(first.size, first.material),
        words=frozenset(content_words(masked.replace(_OBJ, " ").replace(_H, " ").replace(_V, " "))),
    )


_DROPPABLE = ("position", "direction")  # a wall or a relation phrase cannot go without breaking the sentence


def _align(template_sides: tuple, user_sides: tuple) -> list[int] | None:
    """Which of the template's side slots to drop so the rest take the user's sides in order (same keys),
    or None when they cannot (only position and direction phrases may be dropped)."""
    dropped, k = [], 0
    for j, key in enumerate(template_sides):
        if k < len(user_sides) and key == user_sides[k]:
            k += 1
        elif key[0] in _DROPPABLE:
            dropped.append(j)
        else:
            return None
    return dropped if k == len(user_sides) else None


def _drop(text: str, phrase: str) -> str:
    """``text`` without ``phrase`` (once), with the commas and spaces around it tidied."""
    text = text.replace(phrase, " ", 1)
    text = re.sub(r"^\s*,\s*", "", text)
    text = re.sub(r"\s+([,.!?])", r"\1", text)
    text = re.sub(r",(?=[,.!?])", "", text)
    return " ".join(text.split())


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _phrase(np_: NounPhrase, defaults: tuple[str | None, str | None], first: bool) -> str:
    """The user's object in a template: their words, with the template's size and material when they gave
    none; ``a``/``an`` on a first mention, ``the`` later."""
    size = np_.size or defaults[0]
    material = np_.material or defaults[1]
    body = [w for w in (size, np_.colour, material, np_.noun) if w] if first else [np_.colour, np_.noun]
    body = [w for w in body if w]
    return f"{_article(body[0]) if first else 'the'} {' '.join(body)}"


def _fill_sides(text: str, sides: list[SidePhrase]) -> str:
    """Put the user's side words (as they wrote them: "top", "upper", "middle") into the template's side
    slots (same kinds, in order)."""
    for side in sides:
        if side.horizontal is not None:
            word = re.search(r"(left|right|centre|center|middle)", side.text)
            text = text.replace(_H, word.group(1) if word else side.horizontal, 1)
        if side.vertical is not None:
            word = re.search(r"\b(top|bottom|upper|lower)\b", side.text)
            text = text.replace(_V, word.group(1) if word else side.vertical, 1)
    return text


def _capitalise(sentence: str) -> str:
    sentence = " ".join(sentence.split())
    return sentence[:1].upper() + sentence[1:]


@dataclass
class _Clause:
    """One object of the user's prompt: its noun phrase, its side phrases (not relations), its content
    words, the text as written, and the facts of that text without its relation phrases."""

    np: NounPhrase
    sides: list[SidePhrase]
    words: list[str]
    text: str
    facts: Facts


def parse_prompt(prompt: str) -> tuple[list[_Clause], list[tuple[int, SidePhrase]]]:
    """The user's objects, each with the side phrases between it and the next object (a side phrase
    before the first object belongs to the first), and the relations as ``(index of the left-hand object,
    phrase)`` (a relation relates an object to the next one)."""
    low = prompt.lower()
    nps, sides = noun_phrases(low), side_phrases(low)
    clauses, relations = [], []
    for i, np_ in enumerate(nps):
        start = 0 if i == 0 else np_.start
        end = nps[i + 1].start if i + 1 < len(nps) else len(low)
        mine = [s for s in sides if start <= s.start < end]
        relations += [(i, s) for s in mine if s.kind == "relation"]
        own = [s for s in mine if s.kind != "relation"]
        text = low[start:end]
        plain = text
        for s in mine:
            if s.kind == "relation":
                plain = plain.replace(s.text, " ")
        clauses.append(_Clause(np_, own, content_words(text), plain, facts(plain)))
    return clauses, relations


class TemplateUpsampler(PromptUpsampler):
    """Nearest training sentence + slot filling (see the module doc).

    Args:
        captions: training captions; None: :func:`world_captions` (the world's caption grammar).
        num_captions: how many world captions to generate when ``captions`` is None.
        extra_probability: the chance (per seed) of one more sentence that names no object (sound, backdrop).
    """

    name = "template"

    def __init__(
        self, captions: list[str] | None = None, num_captions: int = 200, extra_probability: float = 0.7
    ) -> None:
        if captions is None:
            captions = list(world_captions(num_captions))
            self.source = f"world captions (n={num_captions}, seed 0)"
        else:
            self.source = f"{len(captions)} given captions"
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise ValueError("captions must be a list of strings")
        self.templates: dict[str, list[Template]] = {"object": [], "relation": [], "extra": []}
        seen: set[str] = set()
        for caption in captions:
            for sentence in _SENTENCE.findall(caption):
                template = _mask(sentence)
                if template is not None and template.text not in seen:
                    seen.add(template.text)
                    self.templates[template.kind].append(template)
        if not self.templates["object"]:
            raise ValueError(
                f"no usable sentence templates in {self.source}: none describes one object with the world's "
                "vocabulary (colours, shapes, sides)"
            )
        self.extra_probability = extra_probability
        self.fallbacks = 0  # object sentences written from the user's own clause

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, **{k: len(v) for k, v in self.templates.items()}}

    def _nearest(
        self, kind: str, sides: tuple, wanted: list[str], rng: np.random.Generator
    ) -> tuple[Template, str] | None:
        """The template nearest the user's words among those whose side slots can take the user's sides
        (dropping spare position / direction phrases), and its text with the spare phrases dropped. Nearest:
        most content words in common, then fewest phrases dropped; ties drawn with ``rng``."""
        pool, texts, scores = [], [], []
        for template in self.templates[kind]:
            dropped = _align(template.sides, sides)
            if dropped is None:
                continue
            text = template.text
            for j in dropped:
                text = _drop(text, template.side_texts[j])
            pool.append(template)
            texts.append(text)
            scores.append(2 * len(template.words & set(wanted)) - len(dropped))
        if not pool:
            return None
        best = np.flatnonzero(np.array(scores) == max(scores))
        i = int(best[rng.integers(len(best))])
        return pool[i], texts[i]

    def _object_sentence(self, clause: _Clause, rng: np.random.Generator) -> str:
        keys = tuple(s.key for s in clause.sides)
        found = self._nearest("object", keys, clause.words, rng)
        if found is not None:
            template, text = found
            text = text.replace(_OBJ, _phrase(clause.np, template.defaults, first=True), 1)
            text = _fill_sides(text, clause.sides)
            if facts(text) == clause.facts:
                return _capitalise(text)
        self.fallbacks += 1
        return _capitalise(clause.text.strip(" ,;") + ".")

    def upsample(self, prompt: str, seed: int = 0) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        rng = np.random.default_rng([seed, *prompt.encode("utf-8")])
        clauses, relations = parse_prompt(prompt)
        sentences = [self._object_sentence(c, rng) for c in clauses]
        for i, side in relations:
            if i + 1 >= len(clauses):
                continue  # "left of" nothing: its words are appended below
            found = self._nearest("relation", (side.key,), [], rng)
            a = _phrase(clauses[i].np, (None, None), first=False)
            b = _phrase(clauses[i + 1].np, (None, None), first=False)
            text = (found[1] if found else f"{_OBJ} is to the {_H} of {_OBJ}.").replace(_OBJ, a, 1)
            sentences.append(_capitalise(text.replace(_OBJ, b, 1).replace(_H, side.horizontal or "", 1)))
        if self.templates["extra"] and rng.random() < self.extra_probability:
            extra = self.templates["extra"][int(rng.integers(len(self.templates["extra"])))]
            sentences.append(_capitalise(extra.text))
        if not clauses:  # no object the world knows: the prompt as written, plus the extra sentence
            sentences.insert(0, _capitalise(prompt.strip().rstrip(".") + "."))
        return keep_user_words(prompt, " ".join(sentences))


def keep_user_words(prompt: str, text: str) -> str:
    """``text`` with the prompt's content words it lacks appended (``Also: ...``), in the prompt's order."""
    have = set(words(text))
    missing = [w for w in dict.fromkeys(content_words(prompt)) if w not in have]
    return f"{text} Also: {', '.join(missing)}." if missing else text


# ---- a causal LM -----------------------------------------------------------------------------------------
class LMUpsampler(PromptUpsampler):
    """A causal LM from a local folder, prompted with ``instruction`` (``{prompt}`` marks where the user's
    prompt goes; it is inserted as text, never formatted), sampled with the seed.

    Its text is kept only when it states exactly the prompt's objects, colours and sides; otherwise the
    result is ``fallback.upsample(prompt, seed)`` (a :class:`TemplateUpsampler` by default), counted in
    ``fallbacks``. Words of the prompt the kept text lacks are appended (``Also: ...``)."""

    name = "lm"

    def __init__(
        self,
        model_path: str,
        instruction: str = DEFAULT_LM_INSTRUCTION,
        max_new_tokens: int = 96,
        temperature: float = 0.7,
        top_p: float = 0.9,
        device: str = "auto",
        fallback: PromptUpsampler | None = None,
    ) -> None:
        import torch
        import transformers

        folder = Path(model_path).expanduser()
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise ValueError(
                f"LM upsampler model folder {str(folder)!r} does not exist or has no config.json; give a "
                "local folder with the config, weights and tokenizer (nothing is downloaded)"
            )
        if "{prompt}" not in instruction:
            raise ValueError(f"instruction must contain '{{prompt}}', got {instruction!r}")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(
                f"could not load a causal LM from {str(folder)!r}: {type(err).__name__}: {err}"
            ) from err
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.model_path, self.instruction = folder, instruction
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self._fallback = fallback
        self.fallbacks = 0

    @property
    def fallback(self) -> PromptUpsampler:
        if self._fallback is None:
            self._fallback = TemplateUpsampler()
        return self._fallback

    def describe(self) -> dict:
        return {"name": self.name, "model": str(self.model_path), "class": type(self.model).__name__}

    def generate_text(self, prompt: str, seed: int) -> str:
        """The LM's raw continuation of the instruction (first line, stripped)."""
        import torch

        text = self.instruction.replace("{prompt}", prompt)
        enc = self.tokenizer(text, return_tensors="pt").to(self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            if self.device.type == "cuda":
                torch.cuda.manual_seed(seed)
            with torch.no_grad():
                out = self.model.generate(
                    **enc,
                    do_sample=True,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
        new = self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return " ".join(new.strip().split("\n")[0].split())

    def upsample(self, prompt: str, seed: int = 0) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        text = self.generate_text(prompt, seed)
        if not text or facts(text) != facts(prompt):
            self.fallbacks += 1
            return self.fallback.upsample(prompt, seed)
        return keep_user_words(prompt, text)


def build_upsampler(name: str = "template", **options: Any) -> PromptUpsampler:
    """``template`` (options: ``captions`` = a list of strings, or a path / glob / brace pattern of shards;
    ``num_captions``) or ``lm`` (``model_path``, ``instruction``, ...; its fallback is a template upsampler
    with the same ``captions``)."""
    captions = options.pop("captions", None)
    num_captions = int(options.pop("num_captions", 200))
    if isinstance(captions, str):
        captions, _ = shard_captions(captions)
    elif captions is not None:
        captions = [str(c) for c in captions]
    if name == "template":
        if options:
            raise ValueError(f"unknown options for the template upsampler: {sorted(options)}")
        return TemplateUpsampler(captions, num_captions=num_captions)
    if name == "lm":
        if not options.get("model_path"):
            raise ValueError("upsampler lm needs model_path=<a local causal LM folder>")
        template = TemplateUpsampler(captions, num_captions=num_captions)
        return LMUpsampler(**options, fallback=template)
    raise ValueError(f"unknown upsampler {name!r}; one of {UPSAMPLERS}")
