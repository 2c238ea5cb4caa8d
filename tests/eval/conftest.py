"""Fixtures for the metric tests: synthetic-world clips with ground truth, made once per session.

Every metric is trusted only after it scores these clips near its best and deliberately broken copies of them
(``eval.broken``) clearly worse. Clips are also judged after the mp4 (H.264 + AAC) round trip, because
generated clips are.
"""

from __future__ import annotations

import pytest

from eval.broken import compressed, from_synthetic
from eval.clip import EvalClip

FAMILY_SEEDS = {"fall": (0, 1), "throw": (0, 1), "slide": (0,), "collide": (0, 1), "static": (0,)}
"""Which clips the session makes: a few per family, enough to average over, few enough to stay fast."""
MOVING = ("fall", "throw", "collide")
"""Families with free flight and bounces (gravity fit, teleports, sound onsets)."""


@pytest.fixture(scope="session")
def world() -> dict[str, EvalClip]:
    """Ground-truth clips keyed ``"<family>_<seed>"`` (64x64, 24 fps, 2 s, with sound and metadata)."""
    from data_pipelines.synthetic import WorldConfig, generate_clip

    config = WorldConfig()
    return {
        f"{family}_{seed}": from_synthetic(generate_clip(config, seed, family))
        for family, seeds in FAMILY_SEEDS.items()
        for seed in seeds
    }


@pytest.fixture(scope="session")
def world_mp4(world: dict[str, EvalClip]) -> dict[str, EvalClip]:
    """The same clips after an mp4 round trip (CRF 18, AAC 96 kb/s), keeping their ground truth."""
    return {key: compressed(clip) for key, clip in world.items()}


@pytest.fixture(scope="session")
def moving(world_mp4: dict[str, EvalClip]) -> dict[str, EvalClip]:
    """The compressed clips of the families where things fly and bounce."""
    return {key: clip for key, clip in world_mp4.items() if key.split("_")[0] in MOVING}
