"""Training progress for log files, and per-step wall times for the quickstart's time budget.

Lightning's progress bar shows a run's progress in a terminal only; :class:`ProgressLog` writes it to the
logging system (``train.log``, ``quickstart.log``) every ``every_s`` seconds. :class:`StepTimes` records the
wall time of every optimizer step (data loading, hooks and logging included) for
:mod:`sora.quickstart_budget`'s calibration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


class ProgressLog(L.Callback):
    """Logs ``step i/N (p%), loss, s/step, about m min to go`` every ``every_s`` seconds, at the first step
    and at the last one. ``clock`` is for tests.

    A module whose steps come in two kinds of different cost (the DiT's text-to-image and video steps: its
    ``_image_step`` flag after each step) and that says how many of the steps left are image steps
    (``expected_image_steps(start, end)``) gets the time to go from each kind's own mean step time; while one
    kind has steps left but none timed yet (the video steps during the DiT's warm-up), the line gives the
    time of the kind it has timed and the count of the other: ``about m min to go for the 500 image steps,
    then 300 video steps (not timed yet)``."""

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.perf_counter) -> None:
        if every_s <= 0:
            raise ValueError(f"progress_log.every_s must be > 0, got {every_s}")
        self.every_s, self.clock = every_s, clock
        self._start: tuple[float, int] | None = None
        self._last = self._prev = 0.0
        self._kinds = {True: [0.0, 0], False: [0.0, 0]}  # image step?: [seconds, steps]
        self.lines: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._last = (self.clock(), trainer.global_step), self.clock()
        self._prev = self._last

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._start is None:
            return
        now, step, total = self.clock(), trainer.global_step, trainer.max_steps
        kind = self._kinds[bool(getattr(pl_module, "_image_step", False))]
        kind[0], kind[1], self._prev = kind[0] + now - self._prev, kind[1] + 1, now
        t0, step0 = self._start
        first, last = step == step0 + 1, total > 0 and step >= total
        if not (first or last or now - self._last >= self.every_s):
            return
        self._last = now
        rate = (now - t0) / max(1, step - step0)  # seconds per step since this fit started
        parts = [f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total > 0 else "")]
        loss = trainer.callback_metrics.get("train/loss")
        if torch.is_tensor(loss) and loss.numel() == 1:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"{rate:.3f} s/step")
        if total > 0:
            parts.append(self._to_go(pl_module, step, total, rate))
        line = ", ".join(parts)
        self.lines.append(line)
        log.info("%s: %s", type(pl_module).__name__, line)

    def _to_go(self, pl_module: L.LightningModule, step: int, total: int, rate: float) -> str:
        left = max(0, total - step)
        split = getattr(pl_module, "expected_image_steps", None)
        if split is None:
            return f"about {left * rate / 60:.1f} min to go"
        image = min(left, max(0, round(split(step, total))))
        counts = {True: image, False: left - image}
        timed = {k: s / n for k, (s, n) in self._kinds.items() if n}
        seconds = sum(counts[k] * timed[k] for k in timed)
        untimed = [k for k in (True, False) if counts[k] and k not in timed]
        if not untimed:
            return f"about {seconds / 60:.1f} min to go"
        name = {True: "image", False: "video"}
        done = " and ".join(f"{counts[k]} {name[k]} steps" for k in timed if counts[k])
        rest = " and ".join(f"{counts[k]} {name[k]} steps" for k in untimed)
        if not done:  # only steps of a kind not timed yet are left (the warm-up's end)
            return f"{rest} to go (not timed yet)"
        return f"about {seconds / 60:.1f} min to go for the {done}, then {rest} (not timed yet)"


class StepTimes(L.Callback):
    """Writes ``{"start": t, "steps": [[t_end, is_image_step], ...]}`` to ``path`` when training ends: the
    clock when fit started and after each optimizer step. The difference between consecutive ends is a
    step's whole wall time (data, forward, backward, optimizer, callbacks, logging). ``is_image_step`` is the
    module's ``_image_step`` flag (the DiT's text-to-image steps), False for other modules."""

    def __init__(self, path: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.path, self.clock = Path(path), clock
        self.start: float | None = None
        self.steps: list[tuple[float, bool]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self.clock()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.steps.append((self.clock(), bool(getattr(pl_module, "_image_step", False))))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"start": self.start, "steps": self.steps}))
