"""Whether bf16 autocast pays on a device, and the training precision / sampling autocast that follow from it.

bf16 is a win only where the hardware computes it natively: CUDA GPUs with bf16 support, and CPUs with
AVX512-BF16 or AMX. Elsewhere PyTorch emulates it, and the cost is not small: on a 2-core AVX2 EPYC (measured
2026-12-02) a 7168x128 @ 128x512 matmul took 28 ms in fp32 and 720 ms in bf16, a 64-channel Conv3d 18 ms
and 4980 ms. So the CPU answer is measured, not assumed: :func:`bf16_is_fast` times one small matmul both
ways (thread CPU time on one thread, so a busy machine does not skew it; about 10-200 ms, once per process)
and picks bf16 only when it is faster than fp32.

``precision: auto`` in a trainer config (``conf/trainer/cpu.yaml``) and ``autocast_dtype="auto"`` in
:class:`sora.pipeline.AVPipeline` both go through here; an explicit ``bf16-mixed`` / ``32-true`` / dtype is
used as given.
"""

from __future__ import annotations

import functools
import logging
import time

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
MATMUL_SIZE = 256  # the timed matmul is (MATMUL_SIZE x MATMUL_SIZE) @ (MATMUL_SIZE x MATMUL_SIZE)
REPEATS = 5


def _cpu_time(a: torch.Tensor, b: torch.Tensor) -> float:
    """CPU seconds of this thread for one ``a @ b``: unlike wall time, not inflated when other processes
    take the cores (a busy machine once made fp32 look 4x slower than bf16 here)."""
    start = time.thread_time()
    a @ b
    return time.thread_time() - start


@functools.cache
def cpu_bf16_speedup() -> float:
    """fp32 time over bf16 time of one CPU matmul (> 1: bf16 is faster). Measured once per process, on one
    thread, fp32 and bf16 calls interleaved, the fastest of :data:`REPEATS` each."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a @ b, a16 @ b16  # first calls: allocations, kernel selection
        fp32 = bf16 = float("inf")
        for _ in range(REPEATS):
            fp32 = min(fp32, _cpu_time(a, b))
            bf16 = min(bf16, _cpu_time(a16, b16))
    finally:
        torch.set_num_threads(threads)
    speedup = fp32 / max(bf16, 1e-9)
    log.info(
        "bf16 on this CPU (%s): %.2fx fp32 matmul speed (%.2f ms vs %.2f ms, one thread)",
        torch.backends.cpu.get_cpu_capability(),
        speedup,
        bf16 * 1e3,
        fp32 * 1e3,
    )
    return speedup


def bf16_is_fast(device: str | torch.device) -> bool:
    """Whether bf16 autocast speeds ``device`` up: CUDA with bf16 support; a CPU where bf16 is measured
    faster than fp32 (:func:`cpu_bf16_speedup`); nothing else."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_bf16_speedup() > 1.0
    return False


def resolve_precision(precision: str | int | None, accelerator: str | None) -> str | int | None:
    """A Lightning ``precision`` with ``"auto"`` resolved: ``bf16-mixed`` where :func:`bf16_is_fast` holds for
    the accelerator (``cpu``, ``gpu``/``cuda``; ``auto``/None: CUDA when available), else ``32-true``.
    Anything else is returned unchanged."""
    if precision != AUTO:
        return precision
    device = (accelerator or AUTO).lower()
    if device in (AUTO, "gpu", "cuda"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = "bf16-mixed" if bf16_is_fast(device) else "32-true"
    log.info("precision auto on %s: %s", device, chosen)
    return chosen


def resolve_autocast_dtype(dtype: torch.dtype | str | None, device: str | torch.device) -> torch.dtype | None:
    """``"auto"`` -> ``torch.bfloat16`` where :func:`bf16_is_fast` holds for ``device``, else None (no
    autocast); a dtype or None is returned unchanged."""
    if isinstance(dtype, str):
        if dtype != AUTO:
            raise ValueError(f"autocast_dtype must be a torch.dtype, None or {AUTO!r}, got {dtype!r}")
        return torch.bfloat16 if bf16_is_fast(device) else None
    return dtype
