"""Every Hydra config composes; every DiT experiment runs one training step on CPU (VAE experiments: see
tests/training/test_vae_module.py)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sora.config import CONF_DIR, compose

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
APPS = ["train", "sample", "synthetic", "ingest", "latents", "export", "recaption", "long_clips"]


def test_there_are_experiments():
    assert {"dit_tiny", "dit_tiny_pixels", "dit_S", "dit_B"} <= set(EXPERIMENTS)


TOP_CONFIGS = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
GROUP_OPTIONS = sorted(
    str(p.relative_to(CONF_DIR).with_suffix(""))
    for p in CONF_DIR.glob("*/**/*.yaml")
    if p.parts[-2] not in ("experiment", "launcher")  # experiments and launchers: composed below
)


def _resolved(cfg) -> dict:
    """The config as plain data, every interpolation resolved (a typo in one raises here)."""
    return OmegaConf.to_container(cfg, resolve=True)


def test_every_top_level_config_is_an_app_or_the_quickstart():
    assert set(TOP_CONFIGS) == {*APPS, "eval", "quickstart", "quickstart_long"}


@pytest.mark.parametrize("name", TOP_CONFIGS)
def test_every_top_level_config_composes_and_resolves(name):
    cfg = _resolved(compose(name))
    assert "out_dir" in cfg, f"{name}.yaml: every app writes its outputs (and resolved config) to out_dir"


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_group_option_composes_and_resolves(option):
    group, name = option.rsplit("/", 1)
    if group in ("model/dit", "model/text", "model/vae", "suite"):  # standalone nodes
        node = _resolved(compose(option))
        for key in group.split("/"):
            node = node[key]
        assert node, option
    elif group == "captioner":  # the recaption app's (and ingest's) captioners
        cfg = _resolved(compose("recaption", [f"captioner={name}", "input=x.tar", "out_dir=out"]))
        assert cfg["captioner"]["name"] == name, option
    else:  # the train app's groups (trainer, logger, callbacks, data), composed with an experiment
        cfg = _resolved(compose("train", ["experiment=dit_tiny", f"{group}={name}"]))
        assert cfg[group], option


def test_quickstart_long_is_the_quickstart_with_more_of_everything():
    short, long = _resolved(compose("quickstart")), _resolved(compose("quickstart_long"))
    assert set(long) == set(short) and set(long["steps"]) == set(short["steps"])
    assert set(long["budget_s"]) == set(short["budget_s"])
    assert long["train_clips"] > short["train_clips"] and long["eval_scenes"] >= short["eval_scenes"] >= 60
    assert all(long["steps"][k] > short["steps"][k] for k in short["steps"]), long["steps"]
    assert long["budget_min"] > short["budget_min"]
    # the same slice of the world, so the two runs' suites score the same task (the learning curve spans both)
    assert long["world"] == short["world"] and long["eval_overrides"] == short["eval_overrides"]
    assert long["out_dir"] != short["out_dir"]


def test_slurm_launcher_composes():
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed"
    )
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            ["experiment=dit_B", "trainer=ddp", "trainer.num_nodes=4", "hydra/launcher=slurm"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.nodes == 4


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose("train", [f"experiment={experiment}"])
    _resolved(cfg)
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
