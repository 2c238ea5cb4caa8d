"""Captions written from the ground truth, in varied phrasings, with a structured list of the facts used.

Every statement is read off the metadata in IMAGE axes (x grows to the right), so "left" and "right" are
what a viewer of the rendered clip sees. Phrasing follows a small grammar that tests (and evaluation)
can rely on:
- a start position ("at the top left", "on the right", "in the lower left") and a motion direction
  ("to the left", "leftwards") always refer to the nearest object mentioned before them in the sentence,
  or, when none is, to the first one after them ("On the left, a red ball ...");
- a relation is "<A> ... left of <B>" / "<A> ... right of <B>";
- a wall ("the left wall") is hit by the sentence's first-mentioned object.
The facts behind the words are returned as dicts (``caption_facts`` in the metadata) so evaluation can
check adherence without parsing English.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
NOUNS = {"circle": ("ball", "disc", "circle"), "box": ("box", "square", "block")}
MATERIAL_WORDS = {"rubber": "rubber", "wood": "wooden", "metal": "metal"}
SOUND_WORDS = {
    ("rubber", "small"): ("tap", "bump"),
    ("rubber", "medium"): ("bump", "thump"),
    ("rubber", "large"): ("thud", "thump"),
    ("wood", "small"): ("click", "tick"),
    ("wood", "medium"): ("knock", "clack"),
    ("wood", "large"): ("knock", "clonk"),
    ("metal", "small"): ("clink", "ting"),
    ("metal", "medium"): ("clink", "clang"),
    ("metal", "large"): ("clang", "bong"),
}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
LOUD_SPEED, SOFT_SPEED = 2.5, 1.0
"""Impact speeds (m/s) above which a sound is "loud" and below which it is "soft"."""

_VERBS = {
    "dropped": ("falls", "drops", "falls down", "is dropped"),
    "thrown": (
        "is thrown to the {d}",
        "is tossed to the {d}",
        "flies to the {d} in an arc",
        "is thrown {d}wards",
    ),
    "slid_box": ("slides to the {d}", "is pushed to the {d}", "glides {d}wards"),
    "slid_circle": ("rolls to the {d}", "is rolled to the {d}", "rolls {d}wards"),
    "launched": ("moves to the {d}", "flies to the {d}", "heads {d}wards"),
    "knocked": ("is knocked to the {d} by {other}", "gets pushed to the {d} by {other}"),
    "pushed": ("is pushed to the {d}",),
    "hit": ("is hit by {other}", "gets hit by {other}"),
    "resting": ("rests on the floor", "lies still on the floor", "stays where it is", "sits on the floor"),
}


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else "many"


def _article(next_word: str) -> str:
    return "an" if next_word[:1].lower() in "aeiou" else "a"


def _join(clauses: list[str]) -> str:
    if len(clauses) <= 1:
        return "".join(clauses)
    return ", ".join(clauses[:-1]) + " and " + clauses[-1]


class _Captioner:
    """Holds one clip's ground truth, the random phrasing choices, and which objects were named already."""

    def __init__(self, meta: dict, rng: np.random.Generator) -> None:
        self.meta, self.rng = meta, rng
        self.px_per_m = float(meta["scene"]["px_per_m"])
        self.objects = {obj["id"]: obj for obj in meta["objects"]}
        self.tracks = {track["id"]: track for track in meta["tracks"]}
        self.nouns = {i: self.pick(NOUNS[obj["shape"]]) for i, obj in self.objects.items()}
        self.sound_words = {
            i: self.pick(SOUND_WORDS[(obj["material"], obj["size"])]) for i, obj in self.objects.items()
        }
        self.named: set[int] = set()
        self.facts: list[dict] = []

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def name(self, object_id: int) -> str:
        """First mention: "a small red rubber ball"; later ones: "the red ball"."""
        obj, noun = self.objects[object_id], self.nouns[object_id]
        if object_id in self.named:
            return f"the {obj['color']} {noun}"
        self.named.add(object_id)
        words = []
        if self.rng.random() < 0.85:
            words.append(self.pick(SIZE_WORDS[obj["size"]]))
        words.append(obj["color"])
        if self.rng.random() < 0.35:
            words.append(MATERIAL_WORDS[obj["material"]])
        words.append(noun)
        return f"{_article(words[0])} {' '.join(words)}"

    # ---- what each object does ------------------------------------------------------------------------
    def contacts_of(self, object_id: int) -> list[dict]:
        return [c for c in self.meta["contacts"] if object_id in c["objects"]]

    def start_phrase(self, object_id: int) -> str:
        """Where the object starts, or "" when its place is not worth saying or too close to call."""
        start = next(s for s in self.meta["start"] if s["id"] == object_id)
        horizontal, vertical = start["horizontal"], start["vertical"]
        width = float(self.meta["width"])
        x = float(self.tracks[object_id]["x"][0]) + 0.5
        if min(abs(x - width / 3), abs(x - 2 * width / 3)) < 1.5:  # on a third's border: do not guess
            horizontal = None
        if horizontal in ("left", "right"):
            options = {
                "top": ("at the top {h}", "in the upper {h}", "near the top {h}"),
                "middle": ("on the {h}", "on the {h} side", "at the {h}"),
                "bottom": ("at the bottom {h}", "in the lower {h}"),
            }[vertical]
        elif horizontal == "centre":
            options = {
                "top": ("at the top", "near the top", "at the top centre"),
                "middle": ("in the centre", "in the middle"),
                "bottom": ("at the bottom", "at the bottom centre"),
            }[vertical]
        else:
            options = {"top": ("near the top",), "middle": ("",), "bottom": ("near the bottom",)}[vertical]
        phrase = self.pick(options).format(h=horizontal)
        if phrase:
            self.facts.append(
                {"type": "start", "subject": object_id, "horizontal": horizontal, "vertical": vertical}
            )
        return phrase

    def action(self, object_id: int, joint_partner: int | None = None) -> tuple[str, list[str]]:
        """(verb phrase, later event clauses) of one object, in time order.

        With ``joint_partner`` the start of the motion and the first hit on that partner were already told
        by a joint sentence: the verb is empty and only the later events come back.
        """
        obj = self.objects[object_id]
        contacts = self.contacts_of(object_id)
        role = obj.get("role", "resting")
        verb, hitter = ("", None) if joint_partner is not None else self._verb(object_id, contacts, role)
        return verb, self._event_clauses(object_id, contacts, role, hitter, joint_partner)

    def _verb(self, object_id: int, contacts: list[dict], role: str) -> tuple[str, int | None]:
        """The main verb phrase, and for a resting object the id of the first object that hit it."""
        obj, track = self.objects[object_id], self.tracks[object_id]
        if role in ("thrown", "slid", "launched"):
            direction = "right" if track["vx"][0] > 0 else "left"
            key = f"slid_{obj['shape']}" if role == "slid" else role
            self.facts.append({"type": "motion", "subject": object_id, "direction": direction, "role": role})
            return self.pick(_VERBS[key]).format(d=direction), None
        if role == "dropped":
            return self.pick(_VERBS["dropped"]), None
        # resting: it stays still, or whatever hit it sets it moving
        hits = [c for c in contacts if c["with"] == "object"]
        hitter = next(i for i in hits[0]["objects"] if i != object_id) if hits else None
        moved = track["x"][-1] - track["x"][0]
        direction = None
        if abs(moved) > max(2.0, 0.5 * float(obj["radius_px"])):
            direction = "right" if moved > 0 else "left"
            key = "knocked" if hitter is not None else "pushed"
            self.facts.append({"type": "motion", "subject": object_id, "direction": direction, "role": key})
        else:
            key = "hit" if hitter is not None else "resting"
        if hitter is not None:
            self.facts.append({"type": "contact", "subject": hitter, "with": "object", "object": object_id})
        template = self.pick(_VERBS[key])
        return template.format(d=direction, other=self.name(hitter) if "{other}" in template else ""), hitter

    def _event_clauses(
        self, object_id: int, contacts: list[dict], role: str, hitter: int | None, joint_partner: int | None
    ) -> list[str]:
        timed: list[tuple[float, str]] = []
        floor = [c for c in contacts if c["with"] == "floor"]
        if floor and role != "resting":
            n = len(floor)
            options = (
                ("lands on the floor", "hits the floor", "lands")
                if n == 1
                else ("bounces {n} times", "hits the floor {n} times", "bounces on the floor {n} times")
            )
            clause = self.pick(options).format(n=number_word(n))
            timed.append((floor[0]["time"], clause.replace("two times", "twice")))
            self.facts.append({"type": "contact", "subject": object_id, "with": "floor", "count": n})
        seen = {hitter} if hitter is not None else set()
        for contact in contacts:
            if contact["with"] == "object":
                other = next(i for i in contact["objects"] if i != object_id)
                if other in seen:
                    continue
                seen.add(other)
                if other == joint_partner:
                    continue
                verb = self.pick(("hits {o}", "bumps into {o}", "collides with {o}"))
                timed.append((contact["time"], verb.format(o=self.name(other))))
                self.facts.append(
                    {"type": "contact", "subject": object_id, "with": "object", "object": other}
                )
            elif contact["with"] != "floor" and contact["with"] not in seen:
                seen.add(contact["with"])
                side = contact["with"].removeprefix("wall_")
                phrase = (
                    "hits the ceiling"
                    if side == "ceiling"
                    else self.pick(("bounces off the {s} wall", "hits the {s} wall")).format(s=side)
                )
                timed.append((contact["time"], phrase))
                self.facts.append({"type": "contact", "subject": object_id, "with": contact["with"]})
        clauses = [clause for _, clause in sorted(timed, key=lambda item: item[0])]
        if role == "slid":
            clauses.append(self._slide_ending(object_id))
        return [c for c in clauses if c]

    def _slide_ending(self, object_id: int) -> str:
        track = self.tracks[object_id]
        start, end = abs(track["vx"][0]), math.hypot(track["vx"][-1], track["vy"][-1])
        if end < max(0.05 * start, 3.0):
            state, phrase = "stops", self.pick(("comes to a stop", "stops", "slows to a halt"))
        elif end < 0.6 * start:
            state, phrase = "slows down", self.pick(("slows down", "gradually slows down", "loses speed"))
        else:
            return ""
        self.facts.append({"type": "end", "subject": object_id, "state": state})
        return phrase

    # ---- sound ------------------------------------------------------------------------------------------
    def loudness(self, speeds_px: list[float]) -> str:
        speeds = [s / self.px_per_m for s in speeds_px]
        if all(s >= LOUD_SPEED for s in speeds):
            return "loud "
        if all(s <= SOFT_SPEED for s in speeds):
            return self.pick(("soft ", "faint "))
        return ""

    def object_sound(self, object_id: int) -> str:
        """ " with two soft clicks" for the impacts this object takes part in ("" if none)."""
        contacts = self.contacts_of(object_id)
        if not contacts:
            return ""
        n, word = len(contacts), self.sound_words[object_id]
        loud = self.loudness([c["speed"] for c in contacts])
        sound = f"{_article(loud or word)} {loud}{word}" if n == 1 else f"{number_word(n)} {loud}{word}s"
        return self.pick((" with {s}", " making {s}")).format(s=sound)

    def clip_sound(self) -> str:
        """A sentence about everything heard in the clip."""
        contacts = self.meta["contacts"]
        if not contacts:
            if float(self.meta.get("audio", {}).get("ambience_level", 0.0)) > 0:
                return self.pick(("Only a low hum can be heard.", "Apart from a faint rumble, it is silent."))
            return self.pick(("It is silent.", "Nothing makes a sound."))
        groups: dict[str, list[float]] = {}
        for contact in contacts:
            groups.setdefault(self.sound_words[contact["objects"][0]], []).append(contact["speed"])
        parts = []
        for word, speeds in groups.items():
            loud = self.loudness(speeds)
            n = len(speeds)
            parts.append(
                f"{_article(loud or word)} {loud}{word}" if n == 1 else f"{number_word(n)} {loud}{word}s"
            )
        first_count = len(
            next(iter(groups.values()))
        )  # "there is a thud and two clicks": agrees with the first
        return self.pick(("You hear {s}.", "There {v} {s}.", "The soundtrack has {s}.")).format(
            s=_join(parts), v="is" if first_count == 1 else "are"
        )


def describe(meta: dict, rng: np.random.Generator) -> tuple[str, list[dict]]:
    """Caption a clip from its ground truth; return ``(caption, facts)``.

    ``meta`` needs ``objects`` (with ``role``), ``tracks``, ``contacts``, ``start``, ``relations``,
    ``background``, ``width`` and ``scene.px_per_m``. The random phrasing comes from ``rng``.
    """
    cap = _Captioner(meta, rng)
    sentences: list[str] = []
    per_object_sound = rng.random() < 0.5
    order = sorted(cap.objects)
    launched = [i for i in order if cap.objects[i].get("role") == "launched"]
    joint = (
        len(launched) == 2
        and any(c["with"] == "object" and set(c["objects"]) == set(launched) for c in meta["contacts"])
        and rng.random() < 0.5
    )
    if joint:
        sentences.append(_joint_collision(cap, launched))
        order = launched + [i for i in order if i not in launched]
    for object_id in order:
        partner = (
            next((i for i in launched if i != object_id), None) if joint and object_id in launched else None
        )
        sentences.append(_object_sentence(cap, object_id, per_object_sound, partner))
    relation = _relation_sentence(cap)
    if relation:
        sentences.append(relation)
    if not per_object_sound:
        sentences.append(cap.clip_sound())
    if rng.random() < 0.3:
        sentences.append(_background_sentence(cap))
    text = " ".join(s for s in sentences if s)
    return text, cap.facts


def _object_sentence(cap: _Captioner, object_id: int, with_sound: bool, joint_partner: int | None) -> str:
    if joint_partner is not None:  # already introduced by the joint sentence: only what follows
        _, clauses = cap.action(object_id, joint_partner=joint_partner)
        return f"Then {cap.name(object_id)} {_join(clauses)}." if clauses else ""
    verb, clauses = cap.action(object_id)
    where = cap.start_phrase(object_id) if object_id not in cap.named else ""
    sound = cap.object_sound(object_id) if with_sound else ""
    body = _join([verb, *clauses]) + sound
    subject = cap.name(object_id)
    if where and cap.rng.random() < 0.3:
        sentence = f"{where}, {subject} {body}."
    elif where:
        sentence = f"{subject} {where} {body}."
    else:
        sentence = f"{subject} {body}."
    return sentence[0].upper() + sentence[1:]


def _joint_collision(cap: _Captioner, pair: list[int]) -> str:
    """ "A red ball on the left and a blue box on the right fly towards each other and collide." """
    parts = []
    for object_id in sorted(pair, key=lambda i: cap.tracks[i]["x"][0]):  # left one first, as seen
        subject = cap.name(object_id)
        where = cap.start_phrase(object_id)
        parts.append(f"{subject} {where}".strip())
    cap.facts.append({"type": "contact", "subject": pair[0], "with": "object", "object": pair[1]})
    verb = cap.pick(
        ("fly towards each other and collide", "move towards each other and crash", "meet in mid-air")
    )
    sentence = f"{parts[0]} and {parts[1]} {verb}."
    return sentence[0].upper() + sentence[1:]


def _relation_sentence(cap: _Captioner) -> str:
    """One left/right relation at the first frame (if any and if the dice say so)."""
    horizontal = [r for r in cap.meta["relations"] if r["relation"] in ("left of", "right of")]
    if not horizontal or cap.rng.random() < 0.35:
        return ""
    fact = horizontal[int(cap.rng.integers(len(horizontal)))]
    side = fact["relation"].split()[0]
    cap.facts.append({"type": "relation", **fact})
    template = cap.pick(
        ("{a} is to the {s} of {b}.", "{a} starts to the {s} of {b}.", "At first, {a} is {s} of {b}.")
    )
    subject = cap.name(fact["subject"])
    sentence = template.format(a=subject, s=side, b=cap.name(fact["object"]))
    return sentence[0].upper() + sentence[1:]


def _background_sentence(cap: _Captioner) -> str:
    background = cap.meta["background"]
    look = {
        "plain": "a plain {n} background",
        "gradient": "a {n} background that lightens towards the bottom",
        "noise": "a grainy {n} background",
    }[background["kind"]].format(n=background["name"])
    return cap.pick(("It all happens against {b}.", "The scene is set on {b}.")).format(b=look)


# ---- fixed caption forms: short and structured ------------------------------------------------------------
# Unlike the dense caption these draw nothing at random: the same ground truth always gives the same words,
# so adding them changed no seed's dense caption, pictures or sound, and a captioner that reads the pixels
# (recaption.pixel) can be scored against them word for word.

SHAPE_NOUNS = {"circle": "ball", "box": "box"}
SIDE_PHRASES = {"left": "on the left", "centre": "in the middle", "right": "on the right"}
_MOTIONS = {  # motion -> (singular, plural) verb phrase; {d} is the direction
    "falls": ("falls", "fall"),
    "thrown": ("is thrown to the {d}", "are thrown to the {d}"),
    "slides": ("slides to the {d}", "slide to the {d}"),
    "rolls": ("rolls to the {d}", "roll to the {d}"),
    "flies": ("flies to the {d}", "fly to the {d}"),
    "knocked": ("is knocked to the {d}", "are knocked to the {d}"),
    "rests": ("rests", "rest"),
}


def scene_facts(meta: dict) -> dict:
    """The facts the short and structured captions say, read off the ground truth (image axes).

    Returns ``{"objects": [{"id", "color", "shape", "size", "side", "motion", "direction", "bounces"}],
    "sounds": [{"time", "loudness", "objects", "with"}]}``: ``side`` is the third of the image the object
    starts in (left/centre/right), ``motion`` one of :data:`_MOTIONS` (with ``direction`` left/right or
    None), ``bounces`` its floor impacts, and one sound per impact (``loudness`` loud/soft/"" from the
    approach speed, as the dense caption's "loud"/"soft").
    """
    try:
        px_per_m = float(meta["scene"]["px_per_m"])
        tracks = {t["id"]: t for t in meta["tracks"]}
        starts = {s["id"]: s["horizontal"] for s in meta["start"]}
        objects, contacts = meta["objects"], meta["contacts"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a synthetic-world ground truth: missing {exc}") from exc
    facts = []
    for obj in sorted(objects, key=lambda o: o["id"]):
        track, role = tracks[obj["id"]], obj.get("role", "resting")
        direction = "right" if track["vx"][0] > 0 else "left"
        if role == "dropped":
            motion, direction = "falls", None
        elif role == "thrown":
            motion = "thrown"
        elif role == "slid":
            motion = "slides" if obj["shape"] == "box" else "rolls"
        elif role == "launched":
            motion = "flies"
        else:  # resting: still, or knocked along by what hit it (the dense caption's threshold)
            moved = track["x"][-1] - track["x"][0]
            if abs(moved) > max(2.0, 0.5 * float(obj["radius_px"])):
                motion, direction = "knocked", "right" if moved > 0 else "left"
            else:
                motion, direction = "rests", None
        bounces = sum(1 for c in contacts if c["with"] == "floor" and obj["id"] in c["objects"])
        facts.append(
            {
                "id": obj["id"],
                "color": obj["color"],
                "shape": obj["shape"],
                "size": obj["size"],
                "side": starts[obj["id"]],
                "motion": motion,
                "direction": direction,
                "bounces": bounces,
            }
        )
    sounds = []
    for contact in sorted(contacts, key=lambda c: c["time"]):
        speed = float(contact["speed"]) / px_per_m
        loudness = "loud" if speed >= LOUD_SPEED else "soft" if speed <= SOFT_SPEED else ""
        sounds.append(
            {
                "time": round(float(contact["time"]), 2),
                "loudness": loudness,
                "objects": list(contact["objects"]),
                "with": contact["with"],
            }
        )
    return {"objects": facts, "sounds": sounds}


def _motion_phrase(fact: dict, plural: bool) -> str:
    return _MOTIONS[fact["motion"]][int(plural)].format(d=fact["direction"])


def short_caption(facts: dict) -> str:
    """ "a red ball on the left falls"; "a red ball on the left and a blue box on the right fall".

    Objects that do the same thing share one verb; groups that do different things are joined by "; "
    ("a red ball on the right is thrown to the left; a blue box on the left rests").
    """
    groups: dict[str, list[dict]] = {}
    for fact in facts["objects"]:
        groups.setdefault(_motion_phrase(fact, plural=False), []).append(fact)
    clauses = []
    for group in groups.values():
        names = [
            f"{_article(f['color'])} {f['color']} {SHAPE_NOUNS[f['shape']]} {SIDE_PHRASES[f['side']]}"
            for f in group
        ]
        clauses.append(f"{_join(names)} {_motion_phrase(group[0], plural=len(group) > 1)}")
    return "; ".join(clauses)


def structured_caption(facts: dict) -> str:
    """Every object with its size, colour, shape, start side, motion and bounces, then every sound and when:

    "objects: small red ball (left, falls, bounces 2), large blue box (right, thrown left); sounds: 2 impacts
    at 0.41 s (red ball on the floor, loud), 0.93 s (red ball and blue box)".
    """
    colors = {f["id"]: f"{f['color']} {SHAPE_NOUNS[f['shape']]}" for f in facts["objects"]}
    objects = []
    for fact in facts["objects"]:
        details = [fact["side"], " ".join(w for w in (fact["motion"], fact["direction"]) if w)]
        if fact["bounces"]:
            details.append(f"bounces {fact['bounces']}")
        objects.append(f"{fact['size']} {colors[fact['id']]} ({', '.join(details)})")
    sounds = []
    for sound in facts["sounds"]:
        what = " and ".join(colors[i] for i in sound["objects"])
        if sound["with"] != "object":
            surface = sound["with"].replace("wall_", "") + (
                " wall" if sound["with"].startswith("wall") else ""
            )
            what += f" on the {surface}"
        details = ", ".join(d for d in (what, sound["loudness"]) if d)
        sounds.append(f"{sound['time']:.2f} s ({details})")
    n = len(sounds)
    heard = f"{n} impact{'s' if n != 1 else ''} at {', '.join(sounds)}" if n else "none"
    return f"objects: {', '.join(objects)}; sounds: {heard}"


def caption_forms(meta: dict) -> dict[str, str]:
    """``{"dense", "short", "structured"}`` of a clip: the dense caption is the one in ``meta["caption"]``
    (drawn by :func:`describe`); the other two are fixed functions of the ground truth."""
    facts = scene_facts(meta)
    return {"dense": meta["caption"], "short": short_caption(facts), "structured": structured_caption(facts)}
