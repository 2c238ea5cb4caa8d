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


TINY_AV_CONFIGS = {
    "dit": {
        "_target_": "sora.models.dit.AVDiT",
        "hidden_size": 32,
        "depth": 2,
        "num_heads": 2,
        "text_dim": 16,
    },
    "text_encoder": {"_target_": "sora.models.text.ByteTextEncoder", "dim": 16, "depth": 1, "num_heads": 2},
    "video_vae": {
        "_target_": "sora.models.video_vae.CausalVideoVAE",
        "latent_channels": 16,
        "base_channels": 8,
        "channel_mult": [1, 2, 2],
        "num_res_blocks": 1,
        "temporal_compression": 4,
        "patch_size": 2,
    },
    "audio_vae": {
        "_target_": "sora.models.audio_vae.AudioVAE",
        "latent_channels": 8,
        "base_channels": 8,
        "channel_mult": [1, 2, 2],
        "num_res_blocks": 1,
    },
}
TINY_AV_SAMPLING = {
    "fps": 24,
    "num_frames": 9,
    "height": 32,
    "width": 32,
    "max_num_frames": 21,
    "max_size": 64,
}


@pytest.fixture(scope="session")
def tiny_av_checkpoint(tmp_path_factory):
    """A DiT-stage checkpoint of tiny networks with random (but non-zero: adaLN-zero outputs would be 0) DiT
    weights, 32x32 clips of 9 frames. Saved as the plain ``{"state_dict", "hyper_parameters"}`` dict that
    ``AVPipeline.load`` reads from Lightning checkpoints too (the quickstart's untrained baseline is written
    the same way); building it needs no Lightning import (~15 s on 2 shared cores)."""
    from sora.checkpoint import build_module

    torch.manual_seed(0)
    state = {}
    for name, config in TINY_AV_CONFIGS.items():
        net = build_module(config)
        if name == "dit":
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn_like(p) * 0.02)
        state.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
    path = tmp_path_factory.mktemp("tiny_av") / "dit.ckpt"
    torch.save(
        {"state_dict": state, "hyper_parameters": {**TINY_AV_CONFIGS, "sampling": TINY_AV_SAMPLING}}, path
    )
    return path
