"""Shared optimizer/schedule and the EMA callback."""

import lightning as L
import pytest
import torch
from torch import nn

from sora.training.ema import EMA
from sora.training.optim import OptimConfig, build_optimizer, warmup_cosine


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    values = [warmup_cosine(s, cfg) for s in range(130)]
    assert values[0] < values[5] < values[9] <= 1.0
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:110], values[11:111]))
    assert values[110] == pytest.approx(0.1) and values[129] == pytest.approx(0.1)


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(list(model.named_parameters()), OptimConfig(weight_decay=0.1))["optimizer"]
    decay, no_decay = opt.param_groups
    assert len(decay["params"]) == 1 and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_bad_optim_values_name_the_field():
    with pytest.raises(ValueError, match="optim.lr"):
        OptimConfig(lr=0)
    with pytest.raises(ValueError, match="ema.decay"):
        EMA(decay=1.5)


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def ema_module(self):
        return self.net

    def training_step(self, batch, _):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(8, 2))
        return torch.utils.data.DataLoader(data, batch_size=4)


def _fit(tmp_path, ema, steps, ckpt_path=None):
    trainer = L.Trainer(
        max_steps=steps,
        callbacks=[ema],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    model = _Tiny()
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


def test_ema_tracks_weights_and_survives_resume(tmp_path):
    ema = EMA(decay=0.5, warmup=False)
    trainer, model = _fit(tmp_path, ema, steps=6)
    assert ema.shadow["weight"].dtype == torch.float32
    # the shadow lags the weights but follows them
    assert not torch.equal(ema.shadow["weight"], model.net.weight.detach())
    assert torch.allclose(ema.shadow["weight"], model.net.weight.detach(), atol=0.5)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    saved = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert torch.equal(saved["ema_state_dict"]["weight"], ema.shadow["weight"])

    resumed = EMA(decay=0.5, warmup=False)
    _fit(tmp_path, resumed, steps=6, ckpt_path=tmp_path / "a.ckpt")  # no new steps: shadow restored as saved
    assert torch.equal(resumed.shadow["weight"], saved["ema_state_dict"]["weight"])


class _Counted(_Tiny):
    def flops_per_batch(self, batch):
        return 6.0 * 3 * batch[0].shape[0]  # 2*params*tokens*3 for a 2->1 linear with bias


def test_throughput_monitor_logs_rates(tmp_path):
    from sora.training.throughput import ThroughputMonitor, peak_tflops

    mon = ThroughputMonitor(log_every_n_steps=2, warmup_steps=1, peak_tflops=1.0)
    trainer = L.Trainer(
        max_steps=6,
        callbacks=[mon],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Counted())
    assert mon.last["perf/samples_per_s"] > 0 and mon.last["perf/step_time_s"] > 0
    assert 0 < mon.last["perf/mfu"] < 1 and mon.last["perf/tflops"] == pytest.approx(mon.last["perf/mfu"])
    assert peak_tflops(torch.device("cpu")) is None
