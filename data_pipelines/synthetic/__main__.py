"""CLI: write the synthetic physics world as webdataset shards.

    python -m data_pipelines.synthetic out_dir=DIR num_clips=N seed=S [num_workers=2] [world.width=128] ...

Writes ``out_dir/shard-000000.tar``..., ``config.yaml`` (resolved config), ``summary.json`` (counts per
family, failures, seconds, clips/s) and, with ``preview=true``, ``preview.png`` / ``preview.gif``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from sora.config import CONF_DIR, save_resolved_config

from .config import WorldConfig
from .preview import preview_world
from .shards import generate_shards

log = logging.getLogger(__name__)


def world_config(cfg: DictConfig) -> WorldConfig:
    """The :class:`WorldConfig` of a composed ``synthetic`` config (the ``world`` node plus ``families``)."""
    values = OmegaConf.to_container(cfg.world, resolve=True)
    return WorldConfig.from_dict({**values, "families": list(cfg.families)})


def run(cfg: DictConfig) -> dict:
    """Generate the dataset described by ``cfg``; return the summary that is also written to summary.json."""
    world = world_config(cfg)
    out_dir = Path(cfg.out_dir)
    save_resolved_config(cfg, out_dir)
    report = generate_shards(
        world,
        out_dir,
        int(cfg.num_clips),
        int(cfg.seed),
        int(cfg.clips_per_shard),
        int(cfg.num_workers),
        **OmegaConf.to_container(cfg.encode, resolve=True),
    )
    summary = {
        "out_dir": str(out_dir),
        "num_clips": int(cfg.num_clips),
        "seed": int(cfg.seed),
        **report.summary(),
    }
    if cfg.preview:
        count = min(int(cfg.preview_clips), int(cfg.num_clips))
        paths = preview_world(world, int(cfg.seed), count, out_dir, gif=bool(cfg.preview_gif))
        if paths:
            summary["preview"] = [str(p) for p in paths]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "wrote %d clips (%d shards skipped, %d failed) to %s at %s clips/s",
        summary["written_clips"],
        summary["skipped_shards"],
        summary["failed_clips"],
        out_dir,
        summary["clips_per_second"],
    )
    return summary


@hydra.main(config_path=str(CONF_DIR), config_name="synthetic", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
