"""Where the Hydra configs live, and the helpers every CLI and test uses to compose and record them."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
"""The repository's ``conf/`` folder (the package is installed in editable mode, see README)."""


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides outside of ``@hydra.main`` (tests, notebooks).

    ``hydra.runtime.output_dir`` and friends are not set here; apps called this way take ``out_dir`` from
    the config.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if (
        GlobalHydra.instance().is_initialized()
    ):  # inside a running Hydra app (e.g. the quickstart): same conf/
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)


def save_resolved_config(cfg: DictConfig, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config next to a run's outputs (every run does this)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path
