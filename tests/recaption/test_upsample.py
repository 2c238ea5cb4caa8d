"""Prompt upsampling: the template upsampler keeps the user's facts and words; the LM one falls back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recaption.prompt_facts import COLOURS, content_words, facts, words
from recaption.upsample import (
    LMUpsampler,
    TemplateUpsampler,
    build_upsampler,
    shard_captions,
    world_captions,
)

SIDES = {
    "position": ["on the left", "on the right", "at the top left", "in the lower right", "in the middle"],
    "direction": ["to the left", "to the right", "leftwards"],
}
VERBS = {
    "position": ["falls", "rests", "bounces twice", "drops"],
    "direction": ["is thrown", "slides", "rolls"],
}


def make_prompts(n: int, seed: int = 0) -> list[str]:
    """Short prompts as users write them: 1-2 objects, sizes, colours, materials, sides, relations."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]
    out = []
    for _ in range(n):
        clauses, phrases = [], []
        for _ in range(1 + int(rng.random() < 0.4)):
            np_ = [pick(["small", "big", "tiny"])] if rng.random() < 0.4 else []
            np_ += [pick(COLOURS)] if rng.random() < 0.9 else []
            np_ += ["wooden"] if rng.random() < 0.15 else []
            np_.append(pick(["ball", "box", "disc", "block"]))
            phrases.append(f"a {' '.join(np_)}")
            kind = pick(["position", "direction", "none"])
            if kind == "position":
                clauses.append(f"a {' '.join(np_)} {pick(SIDES['position'])} {pick(VERBS['position'])}")
            elif kind == "direction":
                clauses.append(f"a {' '.join(np_)} {pick(VERBS['direction'])} {pick(SIDES['direction'])}")
            else:
                clauses.append(f"a {' '.join(np_)} {pick(VERBS['position'])}")
        if len(clauses) == 2 and rng.random() < 0.3:
            out.append(f"{phrases[0]} {pick(['left', 'right'])} of {phrases[1]}")
        else:
            out.append(" and ".join(clauses))
    return out


@pytest.fixture(scope="module")
def upsampler() -> TemplateUpsampler:
    return TemplateUpsampler()  # the world's caption grammar


def test_facts_and_words_kept_on_many_prompts(upsampler):
    prompts = make_prompts(150) + [
        "a shiny yellow disc rolls slowly onto a trampoline",
        "a cat jumps over the moon",
        "a red ball",
        "On the left, a big blue box falls. A green ball on the right bounces twice.",
    ]
    changed = 0
    for i, prompt in enumerate(prompts):
        out = upsampler.upsample(prompt, seed=i)
        assert facts(out) == facts(prompt), (prompt, out)
        assert set(content_words(prompt)) <= set(words(out)), (prompt, out)  # unknown words kept
        changed += len(words(out)) > len(words(prompt)) + 3
    # it really upsamples: most prompts gain words, and few objects fall back to the user's own clause
    assert changed >= 0.8 * len(prompts), changed
    assert upsampler.fallbacks <= 0.2 * len(prompts), upsampler.fallbacks


def test_deterministic_per_seed_and_varied_across_seeds(upsampler):
    prompts = make_prompts(20, seed=3)
    first = [upsampler.upsample(p, seed=7) for p in prompts]
    assert first == [upsampler.upsample(p, seed=7) for p in prompts]
    assert first == [TemplateUpsampler(list(world_captions(200))).upsample(p, seed=7) for p in prompts]
    other = [upsampler.upsample(p, seed=8) for p in prompts]
    assert sum(a != b for a, b in zip(first, other)) >= 5


def test_nearest_template_is_filled_with_the_users_words():
    captions = [
        "A red ball on the left zooms happily. A small blue box falls and lands.",
        "A green box hits a yellow ball.",  # two objects and no relation: not a template
        "The red ball is to the right of the blue box.",
    ]
    up = TemplateUpsampler(captions, extra_probability=0.0)
    assert (
        up.upsample("a big white disc on the right zooms") == "A big white disc on the right zooms happily."
    )
    # no side given: the side-less template, with its size kept since the user gave none
    assert up.upsample("a purple ball") == "A small purple ball falls and lands."
    # the nearest template: the one sharing the user's verb
    near = TemplateUpsampler(["A red ball falls and lands.", "A red ball rolls away."], extra_probability=0.0)
    assert [near.upsample("a blue box rolls", seed) for seed in range(3)] == ["A blue box rolls away."] * 3
    assert [near.upsample("a blue box falls", seed) for seed in range(3)] == [
        "A blue box falls and lands."
    ] * 3
    out = up.upsample("a cyan box left of an orange ball")
    assert out == (
        "A small cyan box falls and lands. A small orange ball falls and lands. "
        "The cyan box is to the left of the orange ball."
    )


def test_a_colour_outside_the_object_keeps_the_users_clause():
    up = TemplateUpsampler(["A red ball falls and lands."], extra_probability=0.0)
    # "red" is not the ball's colour word here: a filled template would lose where it was said
    assert up.upsample("a ball turns red") == "A ball turns red."
    assert up.fallbacks == 1


def test_unknown_words_are_appended_in_order():
    up = TemplateUpsampler(["A red ball falls."], extra_probability=0.0)
    assert up.upsample("a shiny red ball falls slowly") == "A red ball falls. Also: shiny, slowly."


def test_captions_from_shards_count_what_they_skip(tmp_path):
    from data_pipelines.shard_writer import ShardWriter

    with ShardWriter(tmp_path / "s-000000.tar") as writer:
        captions = {"short": "a red ball falls", "dense": "x"}
        writer.write(
            "k0", {"txt": b"A red ball on the left falls.", "json": json.dumps({"captions": captions})}
        )
        writer.write("k1", {"txt": b"\xff\xfe not utf-8", "json": b"{}"})
    captions, skipped = shard_captions(str(tmp_path / "*.tar"))
    assert captions == ["A red ball on the left falls.", "a red ball falls", "x"]
    assert skipped == {"unreadable_caption": 1}
    up = build_upsampler("template", captions=str(tmp_path / "*.tar"))
    assert up.describe()["source"] == "3 given captions"
    with pytest.raises(ValueError, match="no shards"):
        shard_captions(str(tmp_path / "none-*.tar"))


def test_bad_input():
    with pytest.raises(ValueError, match="no usable sentence templates"):
        TemplateUpsampler(["hello world."])
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        TemplateUpsampler(["A red ball falls."]).upsample("  ")
    with pytest.raises(ValueError, match="unknown upsampler 'gpt'; one of"):
        build_upsampler("gpt")
    with pytest.raises(ValueError, match="upsampler lm needs model_path"):
        build_upsampler("lm", captions=["A red ball falls."])


# ---- the causal LM ---------------------------------------------------------------------------------------
def test_lm_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'nope'}.*does not exist"):
        LMUpsampler(str(tmp_path / "nope"))


def test_lm_is_deterministic_per_seed_and_keeps_the_facts(lm_folder):
    template = TemplateUpsampler(list(world_captions(200)))
    up = LMUpsampler(str(lm_folder), max_new_tokens=12, fallback=template)
    prompt = "a red ball on the left falls"
    texts = [up.generate_text(prompt, seed) for seed in range(4)]
    assert all(texts) and texts == [up.generate_text(prompt, seed) for seed in range(4)]
    assert len(set(texts)) >= 2  # sampled: the seed matters
    for seed in range(4):
        out = up.upsample(prompt, seed)
        assert facts(out) == facts(prompt)
        if facts(texts[seed]) != facts(prompt):  # the random LM drops or adds a fact: the template's text
            assert out == template.upsample(prompt, seed)
    assert up.fallbacks == sum(facts(t) != facts(prompt) for t in texts)


def test_lm_text_kept_when_it_keeps_the_facts(lm_folder, monkeypatch):
    up = LMUpsampler(str(lm_folder), fallback=TemplateUpsampler(["A red ball falls."], extra_probability=0.0))
    good = "A small red rubber ball on the left falls and bounces twice."
    monkeypatch.setattr(up, "generate_text", lambda prompt, seed: good)
    assert up.upsample("a red ball on the left falls") == good
    assert up.upsample("a red ball on the left falls gently") == good + " Also: gently."
    monkeypatch.setattr(
        up, "generate_text", lambda prompt, seed: "A small ball falls on the left."
    )  # no colour
    # the templates have no sentence with a side: the user's own clause
    assert up.upsample("a red ball on the left falls") == "A red ball on the left falls."
    assert up.fallbacks == 1
