"""Generate clips with sound from a checkpoint: `python sample.py checkpoint=PATH prompt="..." [mode=t2av]`.

`run(cfg)` holds the logic so tests and the eval suite call the same code path (sora/pipeline.py). A request
that fails (unreadable line, refused prompt, generation error) is reported in samples.json and the others
still run; the exit status is then 1.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from sora.config import CONF_DIR
from sora.pipeline import sample_from_config


def run(cfg: DictConfig) -> dict:
    return sample_from_config(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    manifest = run(cfg)
    failed = manifest.get("counts", {}).get("failed", 0)
    if failed:
        raise SystemExit(f"{failed} request(s) failed; their reasons are in {cfg.out_dir}/samples.json")


if __name__ == "__main__":
    main()
