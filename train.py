"""Train a video VAE, an audio VAE or the AV-DiT: `python train.py experiment=<name> [overrides]`.

The experiment (conf/experiment/) picks the LightningModule, its networks and the data; trainer=, logger=
and callbacks= pick how it runs. `run(cfg)` holds the logic so tests can call it directly.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from sora.config import CONF_DIR


def run(cfg: DictConfig) -> dict:
    from sora.training.run import train

    return train(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # every sweep job in its own folder: <sweep dir>/<job number>
        cfg.out_dir = hydra_cfg.runtime.output_dir
    run(cfg)


if __name__ == "__main__":
    main()
