"""The body of `train.py`: build data, module, callbacks, logger and trainer from the config and fit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sora.checkpoint import refuse_remote
from sora.config import CONF_DIR, save_resolved_config
from sora.precision import resolve_precision
from sora.training.resume import RandomState, checkpoint_step, resolve_ckpt_path


def available_experiments() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Instantiate every callback node; a node set to null is dropped (``callbacks.ema=null``). Every run
    also gets :class:`~sora.training.resume.RandomState` (per-batch random state: exact resume)."""
    nodes = cfg.get("callbacks") or {}
    callbacks = [instantiate(node) for node in nodes.values() if node is not None]
    if not any(isinstance(c, RandomState) for c in callbacks):
        callbacks.append(RandomState(cfg.seed))
    return callbacks


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Copy the root logger's records (INFO and up) to ``path`` while the block runs, unless a handler already
    writes there (``python train.py`` gets train.log from Hydra; ``train.run`` called from code, e.g. by the
    quickstart, gets the same file from here)."""
    root = logging.getLogger()
    path = path.resolve()
    if any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.setLevel(logging.INFO)
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:  # only ever more verbose, never less
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def train(cfg: DictConfig) -> dict:
    """Fit ``cfg.module`` on ``cfg.data`` with ``cfg.trainer``; returns the checkpoint and final metrics."""
    if cfg.get("module") is None:
        names = ", ".join(available_experiments()) or "(none yet)"
        raise ValueError(f"no training module selected: pass experiment=<name>; available: {names}")
    refuse_remote(cfg.get("ckpt_path"), "checkpoint (ckpt_path)")  # Lightning unpickles http(s) ones fully
    out_dir = Path(cfg.out_dir)
    save_resolved_config(cfg, out_dir)
    with log_to_file(out_dir / "train.log"):
        return _fit(cfg, out_dir)


def build_trainer(cfg: DictConfig, **kwargs: object) -> L.Trainer:
    """``cfg.trainer`` instantiated with ``kwargs``: a strategy node (e.g. FSDP2 from
    sora.training.parallel) built first, and ``precision: auto`` resolved for the accelerator
    (:func:`sora.precision.resolve_precision`: bf16-mixed only where bf16 is faster than fp32 there)."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    strategy = trainer_cfg.pop("strategy", "auto")
    if isinstance(strategy, dict):
        strategy = instantiate(strategy)
    trainer_cfg["precision"] = resolve_precision(trainer_cfg.get("precision"), trainer_cfg.get("accelerator"))
    return instantiate(trainer_cfg, strategy=strategy, **kwargs)


def _fit(cfg: DictConfig, out_dir: Path) -> dict:
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "high"))
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.module, _recursive_=False)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = build_trainer(cfg, callbacks=build_callbacks(cfg), logger=logger)
    ckpt_path = resolve_ckpt_path(cfg.get("resume"), cfg.get("ckpt_path"), out_dir / "checkpoints")
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    # ModelCheckpoint writes last.ckpt at its save steps only: the final state goes there unless it already
    # holds this step. Rank 0 decides, every rank saves (the save gathers each rank's data position).
    last = out_dir / "checkpoints" / "last.ckpt"
    stale = trainer.is_global_zero and (not last.exists() or checkpoint_step(last) != trainer.global_step)
    if trainer.strategy.broadcast(stale, src=0):
        trainer.save_checkpoint(last)
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1
    }
    return {"checkpoint": str(last), "metrics": metrics, "global_step": trainer.global_step}
