"""precision=auto and autocast_dtype="auto" follow the measured bf16 speed of the device (sora.precision)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sora import precision
from sora.config import CONF_DIR


@pytest.fixture
def cpu_speedup(monkeypatch):
    """Set the measured fp32/bf16 speed ratio of this CPU."""

    def set_to(value: float) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: value)

    return set_to


@pytest.mark.parametrize(("speedup", "expected"), [(4.0, "bf16-mixed"), (0.04, "32-true"), (1.0, "32-true")])
def test_auto_precision_follows_the_cpu_measurement(cpu_speedup, speedup, expected):
    cpu_speedup(speedup)
    assert precision.resolve_precision("auto", "cpu") == expected
    dtype = precision.resolve_autocast_dtype("auto", "cpu")
    assert dtype == (torch.bfloat16 if expected == "bf16-mixed" else None)


def test_explicit_precision_and_dtype_are_kept(cpu_speedup):
    cpu_speedup(0.01)
    assert precision.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert precision.resolve_precision("32-true", "cpu") == "32-true"
    assert precision.resolve_autocast_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    assert precision.resolve_autocast_dtype(None, "cpu") is None
    with pytest.raises(ValueError, match="autocast_dtype"):
        precision.resolve_autocast_dtype("bf16", "cpu")


def test_measurement_takes_the_fastest_interleaved_call_on_one_thread(monkeypatch):
    """The ratio is fp32 time over bf16 time, each the fastest of its calls: fp32 calls slowed by a busy
    machine on all but one try still give bf16's true 10x slowdown. Measured on one thread, restored after."""
    fp32 = iter([50.0, 1.0, 50.0, 50.0, 50.0])
    seen, threads = [], torch.get_num_threads()

    def fake(a, b):
        seen.append((a.dtype, torch.get_num_threads()))
        return next(fp32) if a.dtype == torch.float32 else 10.0

    monkeypatch.setattr(precision, "_cpu_time", fake)
    precision.cpu_bf16_speedup.cache_clear()
    try:
        assert precision.cpu_bf16_speedup() == pytest.approx(0.1)
    finally:
        precision.cpu_bf16_speedup.cache_clear()
    assert [d for d, _ in seen] == [torch.float32, torch.bfloat16] * precision.REPEATS
    assert {n for _, n in seen} == {1} and torch.get_num_threads() == threads


def test_cpu_trainer_config_asks_for_auto():
    assert OmegaConf.load(CONF_DIR / "trainer" / "cpu.yaml").precision == "auto"


def test_pipeline_default_autocast_follows_the_device(cpu_speedup, tiny_av_checkpoint):
    from sora.pipeline import AVPipeline

    cpu_speedup(0.05)
    assert AVPipeline.load(tiny_av_checkpoint).autocast_dtype is None
    cpu_speedup(3.0)
    assert AVPipeline.load(tiny_av_checkpoint).autocast_dtype is torch.bfloat16


def test_a_pipeline_cast_to_bf16_autocasts_in_bf16_even_where_bf16_is_slow(cpu_speedup, tiny_av_checkpoint):
    """Weights cast with dtype=bf16 need bf16 autocast (fp32 activations into bf16 weights fail)."""
    from sora.pipeline import AVPipeline, GenerationRequest

    cpu_speedup(0.05)
    pipe = AVPipeline.load(tiny_av_checkpoint, dtype="bf16")
    assert pipe.autocast_dtype is torch.bfloat16
    req = GenerationRequest(prompt="a red ball falls", num_frames=5, height=32, width=32, steps=2, seed=0)
    assert pipe.generate(req).video.shape == (5, 32, 32, 3)
