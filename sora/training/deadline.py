"""A run that ends on time with its schedules finished: the steps planned again while training, from the
step times the run itself measures.

The quickstart sizes its DiT stage from a calibration of a few steps (:mod:`sora.quickstart_budget`), and
stops it at a time cap (``trainer.max_time``) when the steps take longer than calibrated. A cap that bites
cuts the run's last steps: for the DiT those are its video steps after the text-to-image warm-up, the only
steps that train the sound, with the learning rate not decayed. Measured on a 2-core machine (eleventh
session): the calibration timed 3 image steps at 0.30 s and the run's took 0.40 s, so the cap stopped the
DiT at 645 of its 706 steps, 61 of its ~190 video steps lost; in another run the video steps took 1.3 s
against 1.19 s calibrated and the cap came 20 steps early. Both runs' sound came out 4.4 dB quieter than the
ground truth (the target: within 3 dB).

:class:`DeadlineReplan` measures each kind of step while the run goes (the DiT's image and video steps
apart, as :class:`sora.training.progress.ProgressLog` does) and every ``every`` steps plans the steps again
so that the run ends ``target_s`` seconds after it started: the total steps, and with them every
step-counted schedule that is still ahead (the image warm-up ``image_first_steps``, the learning rate's
``warmup_steps`` and ``hold_steps``; the cosine decay follows ``total_steps``), scaled by the same factor
as at the start of the run (:func:`sora.quickstart_budget.apply_stage_plan`), so the recipe's balance of
image and video steps is kept and the learning rate reaches its floor at the last step. The time cap
stays, as the backstop.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

SCHEDULES = ("warmup_steps", "hold_steps")
"""The optimizer config's step-counted schedules (besides ``total_steps``) that a re-plan scales."""


class DeadlineReplan(L.Callback):
    """Plans the steps again every ``every`` steps so that training ends ``target_s`` seconds after it
    started (the time of the steps to go at each kind's measured step time), and at least
    ``reserve_steps`` of the slowest kind before ``cap_s`` (the run's time cap, ``trainer.max_time``, when
    it is that close: Lightning checks it after each step).

    Step times: the mean of each kind's last ``window`` steps (the module's ``_image_step`` flag after each
    step: the DiT's text-to-image steps; every step of another module is of the other kind), leaving out the
    first step of the run and of each kind (allocator and autograd warm-up of a new shape). A kind with fewer
    than ``min_timed`` steps timed takes its prior, ``image_step_s`` / ``video_step_s`` (the calibration's),
    and without one nothing is re-planned. How many of the steps to go are image steps: the module's
    ``expected_image_steps(start, end, first)``, else none.

    The module needs ``optim_cfg`` (:class:`sora.training.optim.OptimConfig`, whose ``total_steps``,
    ``warmup_steps`` and ``hold_steps`` its LambdaLR reads at every step) and may have
    ``hparams["image_first_steps"]``. The weight EMA's decay stays as planned (a re-plan moves the steps by
    a few %, its horizon with them by as much). A new plan has at most ``max_scale`` times the steps planned
    when the run started; it is applied when it differs by at least 2 steps and 0.5 % of the steps.
    Data-parallel ranks take rank 0's plan. The plan and the elapsed time go into the checkpoint, so a
    resumed run keeps its schedules and its clock (as Lightning's ``Timer`` does).
    """

    def __init__(
        self,
        target_s: float,
        cap_s: float | None = None,
        image_step_s: float | None = None,
        video_step_s: float | None = None,
        every: int = 25,
        min_timed: int = 5,
        window: int = 50,
        reserve_steps: float = 2.0,
        max_scale: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not target_s > 0:
            raise ValueError(f"deadline replan: target_s must be > 0, got {target_s}")
        if every < 1 or min_timed < 1 or window < min_timed:
            raise ValueError(
                f"deadline replan: need every >= 1 and 1 <= min_timed <= window, got every={every}, "
                f"min_timed={min_timed}, window={window}"
            )
        if reserve_steps < 0 or max_scale < 1:
            raise ValueError(f"need reserve_steps >= 0 and max_scale >= 1, got {reserve_steps}, {max_scale}")
        self.target_s, self.every, self.min_timed = float(target_s), every, min_timed
        self.cap_s = None if cap_s is None else float(cap_s)
        self.priors = {True: image_step_s, False: video_step_s}
        self.reserve_steps, self.max_scale, self.clock = reserve_steps, max_scale, clock
        self._times: dict[bool, deque[float]] = {True: deque(maxlen=window), False: deque(maxlen=window)}
        self._seen: set[bool] = set()
        self._offset = 0.0  # seconds of training before a resume
        self._t0 = self._prev = 0.0
        self._started, self._step0, self._last_step = False, 0, -1
        self._planned: int | None = None  # the steps when the run started
        self._restored: dict | None = None
        self.replans: list[dict] = []  # each re-plan: when, at which step times, from and to what schedule

    # -- the clock -------------------------------------------------------------------------------------------

    def elapsed_s(self) -> float:
        return self._offset + self.clock() - self._t0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._prev = self.clock()
        self._started, self._step0 = True, trainer.global_step
        self._last_step = trainer.global_step
        if self._restored is not None:
            self._offset = float(self._restored.get("elapsed_s", 0.0))
            self.replans = list(self._restored.get("replans", []))
            self._planned = self._restored.get("planned")
            if self.replans:
                self._apply(trainer, pl_module, dict(self.replans[-1]["to"]))
            self._restored = None
        if self._planned is None:
            self._planned = int(trainer.max_steps)

    def step_s(self, image: bool) -> float | None:
        """Seconds a step of this kind takes: the mean of its last steps, else the prior."""
        times = self._times[image]
        return statistics.fmean(times) if len(times) >= self.min_timed else self.priors[image]

    # -- the plan --------------------------------------------------------------------------------------------

    def seconds_to_go(self, pl_module: L.LightningModule, step: int, end: int, first: int | None) -> float:
        """Seconds from ``step`` to ``end`` at the current step times, ``first`` image warm-up steps."""
        counter = getattr(pl_module, "expected_image_steps", None)
        image = counter(step, end, first) if counter is not None else 0.0
        seconds = 0.0
        for kind, n in ((True, image), (False, max(0.0, end - step - image))):
            if n > 0:
                rate = self.step_s(kind)
                if rate is None:
                    return math.inf
                seconds += n * rate
        return seconds

    def scaled(self, value: int, step: int, factor: float, end: int) -> int:
        """A step-counted schedule's value under a plan ``factor`` times the current one: one still ahead of
        ``step`` keeps its fraction of the run (not before ``step``, not after ``end``); one passed stays."""
        return value if value <= step else max(step, min(end, round(value * factor)))

    def new_plan(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int] | None:
        """The schedule that ends the run at ``target_s``: ``max_steps`` and the scaled schedules."""
        step, total = trainer.global_step, int(trainer.max_steps)
        rates = [r for r in (self.step_s(True), self.step_s(False)) if r is not None]
        if not rates:
            return None
        left = self.target_s - self.elapsed_s()
        if self.cap_s is not None:
            left = min(left, self.cap_s - self.elapsed_s() - self.reserve_steps * max(rates))
        first = int(pl_module.hparams.get("image_first_steps", 0) or 0)
        if math.isinf(self.seconds_to_go(pl_module, step, total, first)):
            return None  # a kind of step still to come has neither a measured time nor a prior

        def fits(end: int) -> bool:
            factor = end / total
            return self.seconds_to_go(pl_module, step, end, self.scaled(first, step, factor, end)) <= left

        if not fits(step + 1):
            end = step + 1
        else:  # the most steps that fit: seconds_to_go grows with end
            lo, hi = step + 1, max(step + 1, math.floor(self.max_scale * (self._planned or total)))
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
            end = lo
        if abs(end - total) < max(2, 0.005 * total):
            return None
        factor = end / total
        schedule = {"max_steps": end, "total_steps": end}
        optim = pl_module.optim_cfg
        for name in SCHEDULES:
            schedule[name] = self.scaled(int(getattr(optim, name)), step, factor, end)
        if first:
            schedule["image_first_steps"] = self.scaled(first, step, factor, end)
        return schedule

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, schedule: dict[str, int]) -> None:
        trainer.fit_loop.epoch_loop.max_steps = schedule["max_steps"]
        optim = pl_module.optim_cfg
        optim.total_steps = schedule["total_steps"]
        for name in SCHEDULES:
            if name in schedule:
                setattr(optim, name, schedule[name])
        if "image_first_steps" in schedule:
            pl_module.hparams["image_first_steps"] = schedule["image_first_steps"]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # a micro-batch of gradient accumulation: the optimizer step is not done yet
        self._last_step = step
        now = self.clock()
        kind = bool(getattr(pl_module, "_image_step", False))
        duration, self._prev = now - self._prev, now
        if step > self._step0 + 1 and kind in self._seen:
            self._times[kind].append(duration)
        self._seen.add(kind)
        if step % self.every or step >= trainer.max_steps:
            return
        schedule = self.new_plan(trainer, pl_module)
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None:
            schedule = strategy.broadcast(schedule)  # every rank runs rank 0's plan
        if schedule is None:
            return
        before = {"max_steps": int(trainer.max_steps)}
        if "image_first_steps" in schedule:
            before["image_first_steps"] = int(pl_module.hparams["image_first_steps"])
        self._apply(trainer, pl_module, schedule)
        record = {
            "step": step,
            "elapsed_s": round(self.elapsed_s(), 1),
            "image_step_s": self.step_s(True),
            "video_step_s": self.step_s(False),
            "from": before,
            "to": schedule,
        }
        self.replans.append(record)
        log.info("%s: %s", type(pl_module).__name__, describe_replan(record, self.target_s))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.replans:
            log.info(
                "%s: trained %d steps in %.1f min (target %.1f min); planned %d, re-planned %d times",
                type(pl_module).__name__,
                trainer.global_step,
                self.elapsed_s() / 60,
                self.target_s / 60,
                self._planned or 0,
                len(self.replans),
            )

    # -- checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed_s() if self._started else self._offset,
            "planned": self._planned,
            "replans": list(self.replans),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)


def describe_replan(record: dict, target_s: float) -> str:
    """``re-planned at step 100 (1.2 of 7.0 min): 706 -> 660 steps, image warm-up 514 -> 480 (0.40 s an
    image step, 1.30 s a video step)``."""
    to, before = record["to"], record["from"]
    parts = [f"{before['max_steps']} -> {to['max_steps']} steps"]
    if "image_first_steps" in before and before["image_first_steps"] != to["image_first_steps"]:
        parts.append(f"image warm-up {before['image_first_steps']} -> {to['image_first_steps']}")
    rates = [
        f"{record[key]:.2f} s {name}"
        for key, name in (("image_step_s", "an image step"), ("video_step_s", "a video step"))
        if record.get(key) is not None
    ]
    return (
        f"re-planned at step {record['step']} ({record['elapsed_s'] / 60:.1f} of {target_s / 60:.1f} min): "
        + ", ".join(parts)
        + (f" ({', '.join(rates)})" if rates else "")
    )
