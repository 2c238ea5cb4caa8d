"""Throughput and model-FLOPs-utilisation logging.

MFU = achieved model FLOPs per second / peak dense bf16 FLOPs of the device. "Model FLOPs" are counted from
the model config by the LightningModule's ``flops_per_batch(batch)`` (forward + backward = 3x forward; the
recomputation of activation checkpointing is not counted, as in the PaLM definition of MFU).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by a substring of the CUDA device name.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; PCIe parts peak at 756
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "RTX 4090": 165.0,
}


def peak_tflops(device: torch.device | None = None) -> float | None:
    """Peak dense bf16 TFLOP/s of a CUDA device from its name, or None when unknown (e.g. CPU)."""
    if device is None or device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756.0
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


class ThroughputMonitor(L.Callback):
    """Logs ``perf/samples_per_s``, ``perf/step_time_s``, ``perf/tflops`` and, on known GPUs, ``perf/mfu``.

    Timing covers whole optimizer steps (data wait excluded, device synchronised); the first ``warmup_steps``
    (compilation, allocator warm-up) are not logged. ``peak_tflops`` overrides the device table.
    """

    def __init__(
        self, log_every_n_steps: int = 10, warmup_steps: int = 2, peak_tflops: float | None = None
    ) -> None:
        self.log_every_n_steps, self.warmup_steps, self.peak = log_every_n_steps, warmup_steps, peak_tflops
        self._t0: float | None = None
        self._samples = 0
        self._flops = 0.0
        self._steps = 0
        self._elapsed = 0.0
        self.last: dict[str, float] = {}

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._t0 is None or trainer.global_step <= self.warmup_steps:
            return
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._t0
        self._steps += 1
        self._samples += _batch_size(batch)
        flops_fn = getattr(pl_module, "flops_per_batch", None)
        self._flops += float(flops_fn(batch)) if flops_fn else 0.0
        self._elapsed += elapsed
        if self._steps % self.log_every_n_steps:
            return
        world = trainer.world_size
        metrics = {
            "perf/step_time_s": self._elapsed / self._steps,
            "perf/samples_per_s": world * self._samples / self._elapsed,
        }
        if self._flops:
            tflops = self._flops / self._elapsed / 1e12  # per device
            metrics["perf/tflops"] = tflops
            peak = self.peak or peak_tflops(pl_module.device)
            if peak:
                metrics["perf/mfu"] = tflops / peak
        self.last = metrics
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False)
        self._steps, self._samples, self._flops, self._elapsed = 0, 0, 0.0, 0.0


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for value in batch.values():
            if torch.is_tensor(value) and value.ndim > 0:
                return int(value.shape[0])
            if isinstance(value, list):
                return len(value)
    if isinstance(batch, (list, tuple)) and batch and torch.is_tensor(batch[0]):
        return int(batch[0].shape[0])
    return 0
