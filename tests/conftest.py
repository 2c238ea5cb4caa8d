"""Shared pytest setup: `gpu` tests skip without CUDA; every test starts from a fixed seed."""

import random

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def world_shards(tmp_path_factory):
    """A few 1-second synthetic-world clips in 2 webdataset shards (shared by the stage tests)."""
    from data_pipelines.synthetic import WorldConfig, write_shards

    out = tmp_path_factory.mktemp("world")
    write_shards(WorldConfig(duration=1.0), out, num_clips=8, seed=123, clips_per_shard=4, num_workers=1)
    return out


@pytest.fixture(scope="session")
def latent_shards(world_shards, tmp_path_factory):
    """The world shards encoded by untrained tiny VAEs: latent shards with the real layout."""
    from data_pipelines.latents import encode_shards
    from sora.checkpoint import build_module
    from sora.config import compose

    cfg = compose("train", ["experiment=dit_tiny"])
    torch.manual_seed(0)
    video_vae, audio_vae = build_module(cfg.model.video_vae), build_module(cfg.model.audio_vae)
    out = tmp_path_factory.mktemp("latents")
    encode_shards(
        video_vae, audio_vae, str(world_shards / "shard-*.tar"), out, buckets={"64px": [17]}, batch_size=4
    )
    return out
