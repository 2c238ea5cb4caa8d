"""Exact resume: per-batch random state, ``resume=auto``, and a checkpoint on SIGTERM / SIGUSR1.

What a Lightning ``.ckpt`` of this project holds, and where it comes from:

- weights, optimizer and LR-scheduler state, step counters: Lightning itself;
- EMA shadow: :class:`sora.training.ema.EMA`; data position (per rank and data worker: the number of raw
  samples pulled from the seeded stream): ``StreamingDataModule.state_dict`` in :mod:`data_pipelines.dataset`;
- random state: :class:`RandomState` below.

Random state is made resumable by construction rather than by snapshot. Before every training batch the
global generators (torch on CPU and every CUDA device, numpy, python ``random``) are seeded from
``(seed, rank, batch index)``; the checkpoint holds the seed and the batch index. So a batch's timesteps,
noise, conditioning-curriculum mode, caption dropout, posterior samples and dropout masks depend on nothing
that happened before it: not on the validation, the sample videos or a data-loader restart that may run
between two steps (a saved snapshot would be stale after any of those), and every rank draws its own noise.
Data workers never draw from the global generators: every sample's window, crop and caption form
(``caption_keys``) come from a generator seeded by ``(seed, epoch, consumer, stream position)``
(:class:`data_pipelines.dataset.ShardStream`), so the data position is their whole state.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from sora.training.parallel import data_parallel_rank_and_world

log = logging.getLogger(__name__)

RESUME_CHOICES = ("auto",)


def batch_seed(seed: int, rank: int, batch: int) -> int:
    """A 63-bit seed for training batch ``batch`` of ``rank``: statistically independent streams for every
    (seed, rank, batch) (numpy's SeedSequence hashing), so nearby batches or ranks are not correlated."""
    if min(seed, rank, batch) < 0:
        raise ValueError(f"seed, rank and batch must be >= 0, got {seed}, {rank}, {batch}")
    state = np.random.SeedSequence([seed, rank, batch]).generate_state(2, np.uint64)
    return int(state[0]) >> 1


def seed_all(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily when CUDA is not initialised yet)


class RandomState(L.Callback):
    """Seeds every global random generator from ``(seed, rank, batch index)`` before each training batch.

    ``batches`` counts training batches (micro-batches under gradient accumulation), is saved in the
    checkpoint with the seed, and is restored on resume, so batch ``k`` draws the same numbers whether the
    run was interrupted or not. ``train.run`` adds this callback to every run (it is not a config choice).
    """

    def __init__(self, seed: int) -> None:
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.batches = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # The data-parallel rank: the ranks of one sequence-parallel group share a sample, so they must draw
        # the same noise and timesteps for it (sora.training.parallel).
        rank, _ = data_parallel_rank_and_world(trainer)
        seed_all(batch_seed(self.seed, rank, self.batches))
        self.batches += 1

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "batches": self.batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if int(state_dict["seed"]) != self.seed:
            log.warning(
                "resume: the checkpoint was trained with seed=%s, this run has seed=%s: the random draws of "
                "later batches differ from an uninterrupted run",
                state_dict["seed"],
                self.seed,
            )
        self.batches = int(state_dict["batches"])


# ---- resume=auto -----------------------------------------------------------------------------------------


def checkpoint_step(path: Path) -> int | None:
    """``global_step`` of a Lightning checkpoint, or None when the file does not load (e.g. cut short by a
    kill during the write). Memory-mapped and ``weights_only``: tensors are not read, no code runs."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, with its reason
        log.warning("resume: skipping %s, it does not load (%s: %s)", path, type(exc).__name__, exc)
        return None
    step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
    if not isinstance(step, int) or "loops" not in ckpt:
        log.warning("resume: skipping %s, not a Lightning training checkpoint", path)
        return None
    return step


def find_last_checkpoint(directory: Path) -> Path | None:
    """The checkpoint in ``directory`` with the highest ``global_step`` (newest file on ties), or None."""
    candidates = sorted(Path(directory).glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    best: tuple[int, Path] | None = None
    for path in candidates:
        step = checkpoint_step(path)
        if step is not None and (best is None or step > best[0]):
            best = (step, path)
    return best[1] if best else None


def resolve_ckpt_path(resume: Any, ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from.

    ``resume=auto``: the newest checkpoint of this run (``checkpoint_dir``); without one, ``ckpt_path`` (e.g.
    a run started from another run's checkpoint and requeued since); without that, a fresh start. Otherwise
    (``resume`` null or false) ``ckpt_path`` as given.
    """
    if resume in (None, False):
        return ckpt_path
    if resume not in RESUME_CHOICES:
        raise ValueError(f"resume must be null, false or one of {list(RESUME_CHOICES)}, got {resume!r}")
    last = find_last_checkpoint(checkpoint_dir)
    if last is not None:
        log.info("resume=auto: continuing from %s", last)
        return str(last)
    if ckpt_path:
        log.info("resume=auto: no checkpoint in %s yet, starting from %s", checkpoint_dir, ckpt_path)
        return ckpt_path
    log.info("resume=auto: no checkpoint in %s, starting fresh", checkpoint_dir)
    return None


# ---- checkpoint on SIGTERM / SIGUSR1 -----------------------------------------------------------------------


class PreemptionCheckpoint(Checkpoint):
    """On SIGTERM or SIGUSR1 (``signals``), finish the current training step, write
    ``<dirpath>/preempted-step<N>.ckpt`` and exit cleanly (status 0, through Lightning's own SIGTERM exit).

    The handler only records the signal: the checkpoint is written at the end of the step (after the
    optimizer, the EMA and the other callbacks' ``on_train_batch_end``: Lightning runs ``Checkpoint``
    callbacks last), the one point where the state is whole, so ``resume=auto`` continues bitwise. Under DDP
    the ranks agree on the signal each step (one boolean all-reduce) and save together. End-of-training work
    (latent statistics, sample videos) is skipped: the run is not finished. Lightning's own SIGTERM handler
    stays installed; its SLURM SIGUSR1 handler (a checkpoint written from inside the signal handler,
    mid-step, then a requeue) is replaced while training: requeue from the job script, or let SLURM's
    preemption requeue, and run the same command with ``resume=auto``.
    """

    def __init__(self, dirpath: str, signals: tuple[str, ...] | list[str] = ("SIGTERM", "SIGUSR1")) -> None:
        self.dirpath = Path(dirpath)
        self.signals = []
        for name in signals:
            if str(name) not in signal.Signals.__members__:
                raise ValueError(f"preemption.signals: unknown signal {name!r} (e.g. SIGTERM, SIGUSR1)")
            self.signals.append(signal.Signals[str(name)])
        self.received: int | None = None
        self._saved_step: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the handlers, after Lightning installed its own (``Trainer.fit`` puts back the handlers of
        before the fit when it ends, normally or not). SIGTERM also goes on to Lightning's handler (it stops
        the loop at the step end and forwards the signal to DDP worker processes); SIGUSR1 is ours alone."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("preemption: not in the main thread, signal handlers not installed")
            return
        self.received, self._saved_step, self._previous = None, None, {}
        for sig in self.signals:
            if sig == signal.SIGTERM:
                self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self._save(trainer)
            raise SIGTERMException

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """A SIGTERM that arrived after this step's ``on_train_batch_end`` makes Lightning stop at the end of
        the step (still a whole state: save it) or inside a validation (EMA weights swapped in: not a resume
        point, the last periodic checkpoint stands)."""
        if not isinstance(exception, SIGTERMException) or self.received is None:
            return
        if self._saved_step is not None:
            return
        if trainer.training and not trainer.sanity_checking:
            self._save(trainer)
        else:
            log.warning("%s during validation: no checkpoint written (the last one stands)", self._name())

    def _name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal on another rank"

    def _save(self, trainer: L.Trainer) -> None:
        path = self.dirpath / f"preempted-step{trainer.global_step:06d}.ckpt"
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step
        log.info("%s: checkpoint written to %s at step %d; exiting", self._name(), path, trainer.global_step)
