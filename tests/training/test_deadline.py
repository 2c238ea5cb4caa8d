"""DeadlineReplan: a run whose steps are slower or faster than calibrated still ends at its target time,
with its image warm-up's share and its learning-rate schedule finished."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from sora.training.deadline import DeadlineReplan
from sora.training.dit_module import AVDiTModule
from sora.training.optim import OptimConfig, build_optimizer, warmup_cosine


class _Trainer:
    """What the callback reads of a Trainer: the global step and the fit loop's max_steps."""

    def __init__(self, max_steps: int) -> None:
        self.global_step = 0
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=max_steps))

    @property
    def max_steps(self) -> int:
        return self.fit_loop.epoch_loop.max_steps


class _DiT:
    """The DiT module's planning surface: its hparams, optimizer config and image-step counter."""

    def __init__(self, steps: int, first: int, image_prob: float = 0.0) -> None:
        self.hparams = {"image_first_steps": first, "image_prob": image_prob}
        self.optim_cfg = OptimConfig(warmup_steps=10, total_steps=steps, hold_steps=first)
        self.expected_image_steps = partial(AVDiTModule.expected_image_steps, self)
        self._image_step = False


def _run(cb, trainer, module, image_s: float, video_s: float, now: list[float]) -> float:
    """Steps until max_steps, each image step of the warm-up taking image_s, each video step video_s."""
    cb.on_train_start(trainer, module)
    start = now[0]
    while trainer.global_step < trainer.max_steps:
        module._image_step = trainer.global_step < module.hparams["image_first_steps"]
        now[0] += image_s if module._image_step else video_s
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module)
    return now[0] - start


@pytest.mark.parametrize("image_s", [0.40, 0.25])
def test_slow_or_fast_steps_end_at_the_target_with_the_warm_up_share_kept(image_s):
    # planned 706 steps, 514 of them image steps (0.30 s calibrated) then video steps (1.2 s): 384 s
    planned, first, video_s = 706, 514, 1.3
    target = first * 0.30 + (planned - first) * 1.2
    now = [0.0]
    cb = DeadlineReplan(target, cap_s=target, image_step_s=0.30, video_step_s=1.2, clock=lambda: now[0])
    trainer, module = _Trainer(planned), _DiT(planned, first)
    took = _run(cb, trainer, module, image_s, video_s, now)
    # without the re-plan the run would take 514 * image_s + 192 * 1.3 s: 456 s (a cap at 384 s would cut
    # 55 of the 192 video steps) at 0.40 s, 378 s at 0.25 s
    # the cap is the target here: the run ends at least 2 of its slowest steps before it
    assert target - 5 * video_s <= took <= target - 2 * video_s
    steps, warm = trainer.max_steps, module.hparams["image_first_steps"]
    assert trainer.global_step == steps and cb.replans
    assert (steps < planned) == (image_s > 0.30)
    assert warm / steps == pytest.approx(first / planned, abs=0.02)  # the warm-up keeps its share
    assert module.optim_cfg.hold_steps == warm  # the LR holds until the warm-up ends, as planned
    assert module.optim_cfg.total_steps == steps  # the cosine reaches its floor at the last step
    floor = module.optim_cfg.min_lr_ratio
    assert warmup_cosine(steps - 1, module.optim_cfg) == pytest.approx(floor, abs=1e-3)
    assert module.optim_cfg.warmup_steps == 10  # passed before the first re-plan: left as it was


def test_calibrated_steps_are_not_replanned_and_bad_arguments_are_refused():
    now = [0.0]
    cb = DeadlineReplan(100 * 0.3 + 50 * 1.0, image_step_s=0.3, video_step_s=1.0, clock=lambda: now[0])
    trainer, module = _Trainer(150), _DiT(150, 100)
    _run(cb, trainer, module, 0.3, 1.0, now)
    assert trainer.global_step == 150 and cb.replans == [] and module.hparams["image_first_steps"] == 100
    with pytest.raises(ValueError, match="target_s must be > 0"):
        DeadlineReplan(0)
    with pytest.raises(ValueError, match="min_timed"):
        DeadlineReplan(10, min_timed=60, window=50)


def test_without_priors_the_plan_waits_for_measured_steps():
    """No calibration: nothing is re-planned until both kinds the run still has are timed."""
    now = [0.0]
    cb = DeadlineReplan(200.0, clock=lambda: now[0], every=10)
    trainer, module = _Trainer(300), _DiT(300, 200)
    _run(cb, trainer, module, 0.5, 2.0, now)
    first = cb.replans[0]
    assert first["step"] > 200  # the video steps had no time before the warm-up ended
    assert first["video_step_s"] == pytest.approx(2.0)
    assert trainer.global_step == trainer.max_steps < 300  # 200 * 0.5 + 100 * 2 = 300 s > 200 s: shortened


def test_a_resumed_run_keeps_its_plan_and_its_clock():
    now = [0.0]
    cb = DeadlineReplan(150.0, image_step_s=0.3, video_step_s=1.0, clock=lambda: now[0])
    trainer, module = _Trainer(300), _DiT(300, 200)
    cb.on_train_start(trainer, module)
    for _ in range(100):  # image steps at 0.5 s: the plan shrinks
        module._image_step = True
        now[0] += 0.5
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module)
    state = cb.state_dict()
    assert state["replans"][-1]["to"]["max_steps"] == trainer.max_steps < 300 and state["elapsed_s"] == 50.0
    resumed = DeadlineReplan(150.0, image_step_s=0.3, video_step_s=1.0, clock=lambda: now[0])
    resumed.load_state_dict(state)
    trainer2, module2 = _Trainer(300), _DiT(300, 200)  # rebuilt from the config: the first plan
    trainer2.global_step = 100
    now[0] += 1000.0  # the time between the two processes does not count
    resumed.on_train_start(trainer2, module2)
    assert trainer2.max_steps == trainer.max_steps
    assert module2.hparams["image_first_steps"] == module.hparams["image_first_steps"]
    assert module2.optim_cfg.total_steps == module.optim_cfg.total_steps
    assert resumed.elapsed_s() == pytest.approx(50.0)


class _Toy(L.LightningModule):
    """A one-layer module with the project's optimizer: its steps take 1 s on the callback's clock."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.optim_cfg = OptimConfig(lr=1e-2, warmup_steps=5, total_steps=steps)
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch[0]).pow(2).mean()

    def train_dataloader(self):
        x = torch.randn(64, 2)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)

    def configure_optimizers(self):
        return build_optimizer(list(self.named_parameters()), self.optim_cfg)


def test_lightning_run_stops_at_the_new_plan_with_its_cosine_finished(tmp_path):
    """In a real Trainer: max_steps set while fitting stops the run there, and the scheduler's LambdaLR
    decays to its floor at the new last step."""
    module = _Toy(steps=100)
    holder = {}
    cb = DeadlineReplan(40.0, video_step_s=0.5, every=5, clock=lambda: float(holder["t"].global_step))
    trainer = L.Trainer(
        max_steps=100,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    holder["t"] = trainer
    trainer.fit(module)
    assert trainer.global_step == trainer.max_steps
    assert 35 <= trainer.global_step <= 40  # 1 s a step against a 40 s target, less 2 steps' reserve
    assert module.optim_cfg.total_steps == trainer.global_step
    # the LambdaLR read the new total: the last step's LR is the new cosine's, near its floor (0.1 of the
    # peak), not the 100-step cosine's 60 % at step ~38
    last = trainer.global_step - 1
    assert module.lrs[-1] == pytest.approx(1e-2 * warmup_cosine(last, module.optim_cfg), rel=1e-6)
    assert module.lrs[-1] < 0.11e-2


def test_step_times_leave_out_the_first_step_of_the_run_and_of_each_kind():
    """The first step of a run, and the first video step after the warm-up, pay for new shapes (allocator,
    autograd): not the step time of the steps to come."""
    now = [0.0]
    cb = DeadlineReplan(1000.0, min_timed=2, every=1000, clock=lambda: now[0])
    trainer, module = _Trainer(100), _DiT(100, 4)
    cb.on_train_start(trainer, module)
    for step, seconds in enumerate([9.0, 0.5, 0.5, 0.5, 7.0, 2.0, 2.0]):
        module._image_step = step < 4
        now[0] += seconds
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module)
    assert cb.step_s(True) == pytest.approx(0.5) and cb.step_s(False) == pytest.approx(2.0)


def test_gradient_accumulation_times_optimizer_steps_not_micro_batches():
    """With accumulate_grad_batches=2 the hook runs twice per optimizer step: one step, one duration."""
    now = [0.0]
    cb = DeadlineReplan(1000.0, min_timed=2, every=1000, clock=lambda: now[0])
    trainer, module = _Trainer(100), _DiT(100, 0)
    cb.on_train_start(trainer, module)
    for step in range(1, 5):
        for micro in range(2):  # 0.75 s per micro-batch; global_step moves after the second
            now[0] += 0.75
            trainer.global_step = step if micro == 1 else step - 1
            cb.on_train_batch_end(trainer, module)
    assert cb.step_s(False) == pytest.approx(1.5) and len(cb._times[False]) == 3
