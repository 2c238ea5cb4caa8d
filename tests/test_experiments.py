"""Every Hydra config composes; every DiT experiment runs one training step on CPU (VAE experiments: see
tests/training/test_vae_module.py)."""

from pathlib import Path

import pytest

from sora.config import CONF_DIR, compose

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
APPS = ["train", "sample", "synthetic", "ingest", "latents", "export"]


def test_there_are_experiments():
    assert {"dit_tiny", "dit_tiny_pixels", "dit_S", "dit_B"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("app", APPS)
def test_every_app_config_composes(app):
    cfg = compose(app)
    assert cfg is not None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose("train", [f"experiment={experiment}"])
    assert cfg.module._target_.startswith("sora.training.")
    assert cfg.task in cfg.out_dir


@pytest.mark.parametrize("override", ["trainer=gpu", "trainer=ddp", "logger=csv", "logger=tensorboard"])
def test_trainer_and_logger_groups_compose(override):
    cfg = compose("train", ["experiment=dit_tiny", override])
    group, name = override.split("=")
    assert cfg[group]._target_.startswith("lightning.")


def _one_step(experiment: str, tmp_path: Path, overrides: list[str]) -> dict:
    import train

    cfg = compose(
        "train",
        [
            f"experiment={experiment}",
            "trainer=cpu",
            "trainer.max_steps=1",
            "logger=csv",
            f"out_dir={tmp_path}",
            "callbacks.samples.steps=2",
            "callbacks.samples.prompts=[a red ball falls]",
            "module.compile=false",
            *overrides,
        ],
    )
    return train.run(cfg)


DIT_STEP = [e for e in EXPERIMENTS if e.startswith("dit_") and e != "dit_tiny_pixels"]


@pytest.mark.parametrize(
    "experiment",
    [pytest.param(e, marks=pytest.mark.slow) if e in ("dit_S", "dit_B") else e for e in DIT_STEP],
)
def test_dit_experiment_one_step(experiment, latent_shards, tmp_path):
    result = _one_step(
        experiment,
        tmp_path,
        [
            f"data.train_urls={latent_shards}/shard-*.tar",
            "data.batch_size=2",
            "data.max_tokens=null",
            "data.num_workers=0",
            "data.resampled=false",
            "data.epoch_samples=null",
        ],
    )
    assert result["global_step"] == 1 and Path(result["checkpoint"]).is_file()
    assert (tmp_path / "config.yaml").is_file()
    assert list((tmp_path / "samples").rglob("*.mp4")), "the end-of-training validation samples were written"
    # train.run from code (as the quickstart calls it) still leaves a train.log in the run directory
    assert "Seed set to 0" in (tmp_path / "train.log").read_text()


def test_dit_pixels_experiment_one_step(world_shards, tmp_path):
    result = _one_step(
        "dit_tiny_pixels",
        tmp_path,
        [
            f"data.train_urls={world_shards}/shard-*.tar",
            "data.buckets={64px: {17: [1.0, 2]}}",
            "data.num_workers=0",
        ],
    )
    assert result["global_step"] == 1


def test_train_without_experiment_names_the_choices():
    import train

    with pytest.raises(ValueError, match="experiment=<name>; available: .*dit_tiny"):
        train.run(compose("train"))
