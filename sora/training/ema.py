"""Exponential moving average of a module's weights, kept in fp32 and saved in checkpoints."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn


class EMA(L.Callback):
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` for ``pl_module.ema_module()``.

    The shadow is fp32 whatever the training precision (bf16 shadows lose the small updates that are the
    point of an EMA). It is written to ``checkpoint["ema_state_dict"]`` (keys of the EMA'd module's own
    state_dict), which the sampler and exporter prefer over the raw weights, and is restored on resume.
    ``warmup``: the effective decay is ``min(decay, (1 + step) / (10 + step))`` so early averages are not
    dominated by the random initialisation. During validation the shadow weights are swapped in when
    ``validate_with_ema`` is set.
    """

    def __init__(
        self,
        decay: float = 0.999,
        every_n_steps: int = 1,
        warmup: bool = True,
        validate_with_ema: bool = True,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema.decay must be in (0, 1), got {decay}")
        if every_n_steps < 1:
            raise ValueError(f"ema.every_n_steps must be >= 1, got {every_n_steps}")
        self.decay, self.every_n_steps, self.warmup = decay, every_n_steps, warmup
        self.validate_with_ema = validate_with_ema
        self.shadow: dict[str, torch.Tensor] = {}
        self._backup: dict[str, torch.Tensor] | None = None
        self._loaded: dict[str, torch.Tensor] | None = None
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    @staticmethod
    def _target(pl_module: L.LightningModule) -> nn.Module:
        if not hasattr(pl_module, "ema_module"):
            raise TypeError(
                f"{type(pl_module).__name__} has no ema_module(): EMA does not know what to average"
            )
        return pl_module.ema_module()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = self._target(pl_module).state_dict()
        source = self._loaded if self._loaded is not None else state
        self.shadow = {
            k: _like(source[k].detach().float(), v) for k, v in state.items() if v.dtype.is_floating_point
        }
        self._loaded = None
        self._pairs = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        if self._pairs is None:
            # The shadows and the live tensors they follow, paired once: state_dict() walks every submodule,
            # which cost more than the update itself at every step of a small model. Its tensors share the
            # weights' storage (optimizers update in place), so the pairs stay valid for the whole fit.
            state = self._target(pl_module).state_dict()
            names = [k for k in self.shadow if k in state]
            self._pairs = ([self.shadow[k] for k in names], [state[k].detach() for k in names])
        shadows, values = self._pairs
        values = [v if v.dtype == torch.float32 else v.float() for v in values]
        if any(hasattr(v, "device_mesh") for v in shadows):  # DTensors (FSDP2): one by one
            for shadow, value in zip(shadows, values, strict=True):
                shadow.lerp_(value, 1.0 - decay)
        else:  # one call for every tensor: the same lerp, without a Python loop
            torch._foreach_lerp_(shadows, values, 1.0 - decay)

    def swap(self, pl_module: L.LightningModule, use_ema: bool) -> None:
        """Put the shadow weights into the module (``use_ema=True``) or restore the trained ones."""
        module = self._target(pl_module)
        if use_ema and self.shadow:
            self._pairs = None  # re-paired at the next update (load_state_dict copies in place; to be sure)
            self._backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.load_state_dict(self.shadow, strict=False)
        elif not use_ema and self._backup is not None:
            module.load_state_dict(self._backup)
            self._backup = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validate_with_ema:
            self.swap(pl_module, True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validate_with_ema:
            self.swap(pl_module, False)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Sharded (FSDP2) shadows are gathered, so the file loads anywhere; every rank takes part.
        checkpoint["ema_state_dict"] = {k: _full(v).detach().cpu().clone() for k, v in self.shadow.items()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._loaded = checkpoint.get("ema_state_dict")


def _full(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (all-gathered); a plain tensor as is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def _like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``full`` as a float32 copy laid out like ``ref``: sharded the same way when ``ref`` is a DTensor."""
    if hasattr(ref, "device_mesh"):
        from torch.distributed.tensor import DTensor, distribute_tensor

        if isinstance(full, DTensor):
            return full.to(torch.float32).clone()
        return distribute_tensor(full.to(ref.device, torch.float32), ref.device_mesh, ref.placements)
    return full.to(ref.device, torch.float32).clone()
