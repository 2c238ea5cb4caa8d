"""The synthetic world's caption vocabulary, and the facts a text states (objects, colours, sides).

The words come from the world's caption grammar (``data_pipelines.synthetic.captions`` and ``palette``):
colours, nouns (and the shape each names), sizes, materials, sides and motion verbs. The prompt upsampler
(``recaption.upsample``) parses a user's prompt and training sentences with the same functions, and checks
its output with :func:`facts`: an upsampled prompt states exactly the user's objects, colours and sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from data_pipelines.synthetic.captions import MATERIAL_WORDS, NOUNS, SIZE_WORDS
from data_pipelines.synthetic.palette import PALETTE

COLOURS: tuple[str, ...] = tuple(PALETTE)
NOUN_SHAPES: dict[str, str] = {word: shape for shape, words in NOUNS.items() for word in words}
SIZES: dict[str, str] = {word: size for size, words in SIZE_WORDS.items() for word in words}
MATERIALS: dict[str, str] = {word: material for material, word in MATERIAL_WORDS.items()}
SIDE_WORDS: dict[str, str] = {
    "left": "left",
    "right": "right",
    "leftwards": "left",
    "rightwards": "right",
    "top": "top",
    "upper": "top",
    "bottom": "bottom",
    "lower": "bottom",
    "centre": "centre",
    "center": "centre",
    "middle": "centre",
}
"""Every word that places something, and the side it names (``upper`` is top, ``middle`` is centre)."""
STOPWORDS = frozenset(
    "a an the and then of on in at to is are it its with by near side towards toward from as".split()
)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*|\d+(?:\.\d+)?")
_MODIFIERS = {
    **{w: "size" for w in SIZES},
    **{w: "colour" for w in COLOURS},
    **{w: "material" for w in MATERIALS},
}

# Side phrases, most specific first; each is replaced as a whole in a template (see recaption.upsample).
_H = r"(left|right|centre|center|middle)"
SIDE_PHRASES: tuple[tuple[str, re.Pattern], ...] = (
    ("relation", re.compile(r"\b(?:to the )?(left|right) of\b")),
    ("wall", re.compile(r"\bthe (left|right) wall\b")),
    ("direction", re.compile(r"\bto(?:wards)? the (left|right)\b|\b(left|right)wards\b")),
    ("position", re.compile(rf"\b(?:at|in|on|near) the (?:(top|bottom|upper|lower) )?{_H}(?: side)?\b")),
    ("position", re.compile(r"\b(?:at|near) the (top|bottom)\b")),
)


def words(text: str) -> list[str]:
    """Lower-case words (hyphenated words stay one word) and numbers, in order."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class NounPhrase:
    """One object mention: its words (``size``, ``colour``, ``material``, ``noun``; absent ones None) and
    where it is in the lower-cased text (``start`` includes a leading article)."""

    noun: str
    colour: str | None = None
    size: str | None = None
    material: str | None = None
    article: str | None = None
    start: int = 0
    end: int = 0

    @property
    def shape(self) -> str:
        return NOUN_SHAPES[self.noun]


_MOD_RE = "|".join(map(re.escape, sorted(_MODIFIERS, key=len, reverse=True)))
_NP = re.compile(rf"\b(?:(a|an|the) )?((?:(?:{_MOD_RE}) )*)({'|'.join(NOUN_SHAPES)})\b")


def noun_phrases(text: str) -> list[NounPhrase]:
    """Every object mention in ``text`` (lower-cased), in order: ``[article] [modifier]* noun``."""
    out = []
    for m in _NP.finditer(text.lower()):
        mods = {_MODIFIERS[w]: w for w in m.group(2).split()}
        out.append(
            NounPhrase(
                noun=m.group(3),
                colour=mods.get("colour"),
                size=mods.get("size"),
                material=mods.get("material"),
                article=m.group(1),
                start=m.start(),
                end=m.end(),
            )
        )
    return out


@dataclass(frozen=True)
class SidePhrase:
    """A phrase that places something: ``kind`` (position, direction, wall, relation), the horizontal side
    (left/right/centre or None), the vertical one (top/bottom or None), the words as written, and the span."""

    kind: str
    horizontal: str | None
    vertical: str | None
    text: str
    start: int
    end: int

    @property
    def key(self) -> tuple:
        """What a template's side slot must match: the kind, and which sides it names (a centre is not a
        left/right: "on the centre side" is not English)."""
        h = None if self.horizontal is None else ("centre" if self.horizontal == "centre" else "lr")
        return (self.kind, h, self.vertical is not None)


def side_phrases(text: str) -> list[SidePhrase]:
    """Every side phrase in ``text`` (lower-cased), in order, none overlapping (the more specific wins)."""
    low = text.lower()
    taken: list[tuple[int, int]] = []
    out = []
    for kind, pattern in SIDE_PHRASES:
        for m in pattern.finditer(low):
            if any(m.start() < e and s < m.end() for s, e in taken):
                continue
            taken.append((m.start(), m.end()))
            found = [SIDE_WORDS[g] for g in m.groups() if g]
            h = next((s for s in found if s in ("left", "right", "centre")), None)
            v = next((s for s in found if s in ("top", "bottom")), None)
            out.append(SidePhrase(kind, h, v, m.group(0), m.start(), m.end()))
    return sorted(out, key=lambda p: p.start)


@dataclass(frozen=True)
class Facts:
    """What a text states that an upsampler must keep: objects as (colour or None, shape), colours, sides."""

    objects: frozenset = field(default_factory=frozenset)
    colours: frozenset = field(default_factory=frozenset)
    sides: frozenset = field(default_factory=frozenset)

    def missing_from(self, other: Facts) -> dict[str, list]:
        """The facts of ``self`` that ``other`` lacks, by kind (empty lists when none)."""
        return {
            "objects": sorted(self.objects - other.objects, key=str),
            "colours": sorted(self.colours - other.colours),
            "sides": sorted(self.sides - other.sides),
        }


def facts(text: str) -> Facts:
    """The objects, colours and sides ``text`` names (every mention counts, wherever it is)."""
    ws = words(text)
    return Facts(
        objects=frozenset((p.colour, p.shape) for p in noun_phrases(text)),
        colours=frozenset(w for w in ws if w in COLOURS),
        sides=frozenset(SIDE_WORDS[w] for w in ws if w in SIDE_WORDS),
    )


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning (not articles, prepositions or connectives), in order."""
    return [w for w in words(text) if w not in STOPWORDS]
