"""The prompt filter: text is normalised before rules match, so spelling tricks do not get past it.

Normalisation (:func:`normalize_variants`) undoes the usual ways of writing around a blocklist:

- Unicode compatibility forms (NFKC: full-width ``ｂｏｍｂ``, ligatures, circled letters), accents (``bómb``),
  invisible format characters (zero-width space/joiner, soft hyphen, bidi marks: category ``Cf``), and
  the Cyrillic/Greek letters that look like Latin ones (``bоmb`` with a Cyrillic ``о``);
- case (``casefold``) and leetspeak in words that have a letter (``b0mb``, ``p0rn``, ``$ex``, ``k!ll``;
  ``1`` is tried as both ``i`` and ``l``; ``3 balls`` stays a number);
- separators: punctuation becomes a space, runs of single letters are joined (``b o m b``, ``b.o.m.b``),
  repeated letters are collapsed in one variant (``boooomb``), and a *compact* variant drops every space
  (``childporn``, ``make a b o m b`` -> ``makeabomb``).

Rules are regular expressions over the word variants (matched on word boundaries, so ``ass`` never matches
``glass``) and a few compound rules over the compact variant, where only long, unambiguous compounds are
listed (a compact ``kidsex`` would match "kids exercise"). The default list is deliberately small and aimed at
the worst misuse (sexual content with minors, non-consensual intimate imagery, weapon-making instructions);
deployments add their own rules and pluggable classifiers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# Words between a verb and its object: "build an improvised explosive device" has two.
_GAP = r"(?:\s+\w+){0,4}\s+"
_MAKE = (
    r"(?:make|makes|making|made|build|builds|building|built|assembl\w*|construct\w*|creat\w*|manufactur\w*"
    r"|produc\w*|cook\w*|prepar\w*|synthes\w*|brew\w*|rig|rigg\w*|wir(?:e|ing)|how\s+to\s+(?:make|build))"
)
_WEAPON = (
    r"(?:bombs?|pipe\s*bombs?|dirty\s*bombs?|nail\s*bombs?|explosives|explosive\s+(?:device|charge|vest|belt"
    r"|material|mixture)s?|ieds?|detonators?|molotovs?|grenades?|nerve\s+(?:agent|gas)s?|sarin|vx\s+gas|ricin"
    r"|anthrax|bio\s*weapons?|chemical\s+weapons?|napalm|mustard\s+gas)"
)
_MINOR = (
    r"(?:child|children|childs|kid|kids|kiddie|minor|minors|under\s*age|under\s*aged|pre\s*teens?|toddlers?"
    r"|infants?|babies|baby|school\s*girls?|school\s*boys?|loli|lolita|shota|little\s+(?:girl|boy)s?"
    r"|\d{1,2}\s*(?:yo|year\s+old|years\s+old))"
)
_SEXUAL = (
    r"(?:porn\w*|sex|sexual\w*|sexy|nude|nudes|naked|nudity|erotic\w*|explicit|nsfw|xxx|lewd|undress\w*)"
)

DEFAULT_BLOCKLIST: dict[str, str] = {
    "sexual-minors": rf"{_MINOR}(?:\s+\w+){{0,3}}\s+{_SEXUAL}|{_SEXUAL}(?:\s+\w+){{0,3}}\s+{_MINOR}"
    r"|csam|child\s*abuse\s+(?:material|imagery|images|videos?)|pedo\w*|paedo\w*",
    "non-consensual-intimate": r"non\s*consensual(?:\s+\w+){0,2}\s+(?:intimate|sexual|sex|porn\w*|nude\w*"
    r"|explicit|naked)|revenge\s*porn\w*|deep\s*fake(?:\s+\w+){0,2}\s+(?:porn\w*|nude\w*|sex|naked)"
    r"|rap(?:e|es|ed|ing|ist)|sexual\s+assault",
    "weapons": rf"{_MAKE}{_GAP}{_WEAPON}|{_MAKE}\s+{_WEAPON}"
    r"|(?:bomb|explosive|ied|nerve\s+agent)s?\s*(?:making|building|recipe|instructions?|tutorial|construction)",
}
"""Rule name -> regular expression over normalised text (lower case ``[a-z0-9 ]``, single spaces)."""

DEFAULT_COMPACT_BLOCKLIST: dict[str, str] = {
    "sexual-minors": r"(?:child|children|kiddie|kid|underage|preteen|toddler|schoolgirl|lolita)s?porn|csam"
    r"|(?:child|children|kiddie|underage|preteen)s?(?:sex|nude|naked)",
    "non-consensual-intimate": r"nonconsensual(?:intimate|sexual|sex|porn|nude)|revengeporn|deepfakeporn",
    "weapons": r"(?:make|making|build|building|howtomake|howtobuild)(?:a|an|the|some)?"
    r"(?:pipe|dirty|nail)?(?:bomb|explosive|ied|molotov|grenade|nerveagent|sarin|ricin)",
}
"""Rule name -> regular expression over the compact form (every space removed); long compounds only."""

# Latin lookalikes from other scripts (after casefold); NFKC leaves them alone because they are real letters.
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "α": "a",
        "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
        "χ": "x", "ω": "w", "ß": "ss",
    }
)  # fmt: skip
_LEET_DIGITS = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"}
_LEET_I = str.maketrans({**_LEET_DIGITS, "1": "i", "@": "a", "$": "s", "!": "i", "|": "i"})
_LEET_L = str.maketrans({**_LEET_DIGITS, "1": "l", "@": "a", "$": "s", "!": "i", "|": "l"})
# Symbols count as letters only inside a word ("k!ll", "p|rn") or "@"/"$" in front of one ("$ex"):
# "bomb!!" is a bomb and an exclamation, not "bombii".
_LEET_SYMBOLS = re.compile(r"(?<=[a-z0-9])[@$!|]+(?=[a-z0-9])|(?<![a-z0-9])[@$](?=[a-z])")
_SINGLE_RUN = re.compile(r"\b(?:[a-z0-9]\s){2,}[a-z0-9]\b")  # "b o m b" (three or more single characters)


def _fold(text: str) -> str:
    """NFKC, format characters dropped, accents stripped, case folded, lookalike letters mapped to Latin."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return unicodedata.normalize("NFKC", text.casefold()).translate(_CONFUSABLES)


def _words(text: str) -> str:
    """Anything that is not a letter or digit becomes a space; single-letter runs are joined."""
    text = " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())
    return _SINGLE_RUN.sub(lambda m: m.group(0).replace(" ", ""), text)


def _leet(words: str, table: dict) -> str:
    """Digits read as letters in every word that has a letter ("b0mb", "ch1ld"; "3 balls" stays)."""
    return " ".join(w.translate(table) if re.search("[a-z]", w) else w for w in words.split(" "))


def normalize_variants(text: str) -> tuple[list[str], list[str]]:
    """The word forms and compact forms of ``text`` that rules are matched against (see the module doc)."""
    folded = _fold(text)
    words: list[str] = []
    forms = [_words(folded)]
    for table in (_LEET_I, _LEET_L):
        symbols = _LEET_SYMBOLS.sub(lambda m, t=table: m.group(0).translate(t), folded)
        forms.append(_leet(_words(symbols), table))
    for w in forms:
        for variant in (w, re.sub(r"([a-z])\1+", r"\1", w)):  # "boooomb" -> "bomb"
            if variant not in words:
                words.append(variant)
    compact = list(dict.fromkeys(w.replace(" ", "") for w in words))
    return words, compact


Classifier = Callable[[str], "tuple[bool, str] | bool"]


class PromptRejected(ValueError):
    """Raised for a prompt the filter refuses; ``rule`` names what matched."""

    def __init__(self, prompt: str, rule: str) -> None:
        self.prompt, self.rule = prompt, rule
        super().__init__(f"prompt rejected by the safety filter (rule: {rule}); no clip was generated")


def _named(rules: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(rules, Mapping):
        return {str(k): str(v) for k, v in rules.items()}
    return {str(r): str(r) for r in rules}


@dataclass
class PromptFilter:
    """Rules over normalised text plus optional pluggable classifiers.

    ``blocklist`` is a mapping ``name -> regex`` (or a list of regexes, each its own name) matched on word
    boundaries against every word variant of the normalised prompt; ``compact_blocklist`` is matched
    anywhere in the compact variants. A classifier is any callable ``prompt -> bool`` or
    ``prompt -> (flagged, reason)``: ``True`` means reject; it sees the original text.
    """

    blocklist: Sequence[str] | Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BLOCKLIST))
    compact_blocklist: Sequence[str] | Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_COMPACT_BLOCKLIST)
    )
    classifiers: Sequence[Classifier] = field(default_factory=tuple)
    enabled: bool = True

    def __post_init__(self) -> None:
        try:
            self._patterns = [
                (name, re.compile(rf"\b(?:{p})\b", re.IGNORECASE))
                for name, p in _named(self.blocklist).items()
            ]
            self._compact = [
                (name, re.compile(p, re.IGNORECASE)) for name, p in _named(self.compact_blocklist).items()
            ]
        except re.error as err:
            raise ValueError(f"invalid safety blocklist pattern: {err}") from err

    def check(self, prompt: str) -> str | None:
        """The name of the rule that rejects ``prompt``, or ``None`` when it is allowed."""
        if not self.enabled:
            return None
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be text, got {type(prompt).__name__}")
        words, compact = normalize_variants(prompt)
        for name, pattern in self._patterns:
            if any(pattern.search(w) for w in words):
                return f"blocklist:{name}"
        for name, pattern in self._compact:
            if any(pattern.search(c) for c in compact):
                return f"blocklist:{name}"
        for classifier in self.classifiers:
            verdict = classifier(prompt)
            flagged, reason = verdict if isinstance(verdict, tuple) else (verdict, "")
            if flagged:
                return f"classifier:{getattr(classifier, '__name__', type(classifier).__name__)}" + (
                    f":{reason}" if reason else ""
                )
        return None

    def require(self, prompt: str) -> None:
        """Raise :class:`PromptRejected` if the prompt is refused."""
        rule = self.check(prompt)
        if rule is not None:
            raise PromptRejected(prompt, rule)
