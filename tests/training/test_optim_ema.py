"""Shared optimizer/schedule and the EMA callback."""

from types import SimpleNamespace

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


def test_schedule_holds_the_peak_until_hold_steps_then_decays_over_the_rest():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, hold_steps=60, total_steps=110, min_lr_ratio=0.1)
    values = [warmup_cosine(s, cfg) for s in range(130)]
    assert values[0] < values[9] <= 1.0
    assert values[10:61] == pytest.approx([1.0] * 51)
    assert values[61] < 1.0 and values[85] == pytest.approx(0.55)  # the cosine's midpoint, 25 steps after 60
    assert all(a >= b for a, b in zip(values[60:110], values[61:111]))
    assert values[110] == pytest.approx(0.1) and values[129] == pytest.approx(0.1)
    # a hold shorter than the LR warm-up changes nothing
    short = OptimConfig(lr=1.0, warmup_steps=10, hold_steps=5, total_steps=110, min_lr_ratio=0.1)
    plain = OptimConfig(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert [warmup_cosine(s, short) for s in range(130)] == [warmup_cosine(s, plain) for s in range(130)]
    with pytest.raises(ValueError, match="hold_steps"):
        OptimConfig(hold_steps=-1)


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(list(model.named_parameters()), OptimConfig(weight_decay=0.1))["optimizer"]
    decay, no_decay = opt.param_groups
    assert len(decay["params"]) == 1 and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_cpu_adamw_is_fused_and_makes_the_same_update_as_the_loop():
    """The fused kernel (default on CPU since it is 4x faster there) is the same AdamW: a few steps with
    weight decay land on the loop's weights to float rounding."""

    def train(fused):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 1))
        cfg = OptimConfig(lr=1e-2, weight_decay=0.1, fused=fused)
        opt = build_optimizer(list(model.named_parameters()), cfg)["optimizer"]
        for step in range(5):
            x = torch.randn(4, 8, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        return opt, [p.detach().clone() for p in model.parameters()]

    fused, fused_weights = train(None)
    loop, loop_weights = train(False)
    assert fused.defaults["fused"] is True and not loop.defaults["fused"]
    for a, b in zip(fused_weights, loop_weights, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_fused_adamw_trains_with_bf16_autocast_and_gradient_clipping(tmp_path):
    """The quickstart's trainer settings (bf16-mixed, gradient_clip_val) with the fused optimizer: Lightning
    refuses to clip for an optimizer that claims to unscale gradients itself."""

    class Clipped(_Tiny):
        def configure_optimizers(self):
            return build_optimizer(list(self.named_parameters()), OptimConfig(lr=0.1, warmup_steps=0))

    trainer = L.Trainer(
        max_steps=3,
        precision="bf16-mixed",
        gradient_clip_val=1.0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    model = Clipped()
    trainer.fit(model)
    assert trainer.global_step == 3 and trainer.optimizers[0].defaults["fused"] is True


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


def _ema_step(ema, module, value, step):
    """Set every weight of ``module.net`` to ``value`` (as an optimizer step would), then one EMA update."""
    with torch.no_grad():
        for p in module.net.parameters():
            p.fill_(value)
    ema.on_train_batch_end(SimpleNamespace(global_step=step), module, None, None, step)


def test_ema_update_matches_the_hand_computed_average():
    module = _Tiny()
    with torch.no_grad():
        for p in module.net.parameters():
            p.zero_()
    ema = EMA(decay=0.9, warmup=False)
    ema.on_fit_start(None, module)
    # shadow: 0 -> 0.9*0 + 0.1*1 = 0.1 -> 0.9*0.1 + 0.1*2 = 0.29 -> 0.9*0.29 + 0.1*3 = 0.561
    for step, (value, expected) in enumerate([(1.0, 0.1), (2.0, 0.29), (3.0, 0.561)], start=1):
        _ema_step(ema, module, value, step)
        for name in ("weight", "bias"):
            torch.testing.assert_close(
                ema.shadow[name], torch.full_like(ema.shadow[name], expected), atol=1e-6, rtol=0
            )

    warm = EMA(decay=0.9, warmup=True)  # effective decay min(0.9, (1 + step) / (10 + step))
    with torch.no_grad():
        module.net.weight.zero_()
    warm.on_fit_start(None, module)
    _ema_step(warm, module, 1.0, step=0)  # decay 1/10: 0.1*0 + 0.9*1
    _ema_step(warm, module, 0.0, step=20)  # decay min(0.9, 21/30) = 0.7: 0.7*0.9
    torch.testing.assert_close(
        warm.shadow["weight"], torch.full_like(warm.shadow["weight"], 0.63), atol=1e-6, rtol=0
    )

    every = EMA(decay=0.9, warmup=False, every_n_steps=2)
    with torch.no_grad():
        module.net.weight.zero_()
    every.on_fit_start(None, module)
    _ema_step(every, module, 1.0, step=1)  # skipped
    assert float(every.shadow["weight"].abs().max()) == 0.0
    _ema_step(every, module, 1.0, step=2)
    torch.testing.assert_close(
        every.shadow["weight"], torch.full_like(every.shadow["weight"], 0.1), atol=1e-6, rtol=0
    )


class _Recorder(L.Callback):
    """Records the weights after every optimizer step (runs before the EMA callback)."""

    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.weights.append(pl_module.net.weight.detach().clone())


def test_ema_tracks_weights_and_survives_resume(tmp_path):
    recorder, ema = _Recorder(), EMA(decay=0.9, warmup=False)
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_steps=6,
        callbacks=[recorder, ema],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    model = _Tiny()
    initial = model.net.weight.detach().clone()
    trainer.fit(model)
    assert ema.shadow["weight"].dtype == torch.float32
    # within Lightning: the shadow starts at the initial weights and averages the weights after every step
    expected = initial
    for w in recorder.weights:
        expected = 0.9 * expected + 0.1 * w
    assert len(recorder.weights) == 6
    torch.testing.assert_close(ema.shadow["weight"], expected, atol=1e-6, rtol=0)
    assert not torch.allclose(ema.shadow["weight"], model.net.weight.detach(), atol=1e-3)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    saved = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert torch.equal(saved["ema_state_dict"]["weight"], ema.shadow["weight"])

    resumed = EMA(decay=0.9, warmup=False)
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
