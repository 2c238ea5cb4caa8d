"""The one place that knows about activation checkpointing, torch.compile and FSDP.

They are applied in a fixed order (torchtitan's): activation checkpointing, then compile, then FSDP
wrapping; model code stays single-device. A network opts in by exposing its repeated blocks as
``blocks`` (an ``nn.ModuleList``), optionally ``single_blocks`` too; that is all this module assumes.

Lightning applies FSDP itself (``trainer.strategy``); :func:`fsdp_strategy` builds that strategy with
the per-block wrap policy and a mixed-precision policy, and the LightningModules call
:func:`apply_activation_checkpointing_and_compile` from their ``configure_model`` hook, which Lightning
runs before wrapping.
"""

from __future__ import annotations

import torch
from torch import nn

BLOCK_LISTS = ("blocks", "single_blocks")


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer/resnet blocks of ``model`` (its ``blocks`` and ``single_blocks`` lists)."""
    found: list[nn.Module] = []
    for name in BLOCK_LISTS:
        found.extend(getattr(model, name, None) or [])
    return found


def apply_activation_checkpointing_and_compile(
    model: nn.Module,
    *,
    activation_checkpointing: bool = False,
    compile: bool = False,
    compile_mode: str | None = None,
) -> nn.Module:
    """Steps 1 and 2 of the fixed order, in place.

    Activation checkpointing uses the network's own per-block switch (``model.gradient_checkpointing``), so the
    block code decides what is recomputed. Blocks are compiled one by one with ``nn.Module.compile`` (in place:
    state_dict keys do not change, so checkpoints and exports stay loadable into a plain model). The block graph
    is identical across depth, so it compiles once and is reused, and a new bucket shape only recompiles a
    small graph.
    """
    if activation_checkpointing:
        if not hasattr(model, "gradient_checkpointing"):
            raise ValueError(f"{type(model).__name__} has no gradient_checkpointing switch")
        model.gradient_checkpointing = True
    if compile:
        for block in repeated_blocks(model):
            block.compile(mode=compile_mode)
    return model


def fsdp_strategy(
    *,
    block_class_names: list[str] | None = None,
    sharding_strategy: str = "FULL_SHARD",
    param_dtype: str = "bfloat16",
    reduce_dtype: str = "float32",
    activation_checkpointing: bool = False,
    cpu_offload: bool = False,
    state_dict_type: str = "full",
):
    """A Lightning ``FSDPStrategy`` that wraps each transformer block as its own FSDP unit (step 3).

    ``block_class_names`` are dotted class paths (default: the AV-DiT block); parameters are
    kept in fp32 and cast to ``param_dtype`` for compute, gradients reduced in ``reduce_dtype`` (fp32 reduces
    avoid bf16 rounding in the all-reduce of small gradients).
    """
    import importlib

    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import MixedPrecision

    names = block_class_names or ["sora.models.dit.AVDiTBlock"]
    classes = set()
    for dotted in names:
        module_name, _, cls_name = dotted.rpartition(".")
        try:
            classes.add(getattr(importlib.import_module(module_name), cls_name))
        except (ImportError, AttributeError) as err:
            raise ValueError(f"fsdp block class {dotted!r} not found") from err
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if param_dtype not in dtype or reduce_dtype not in dtype:
        raise ValueError(f"fsdp dtypes must be one of {sorted(dtype)}, got {param_dtype}/{reduce_dtype}")
    mp = MixedPrecision(
        param_dtype=dtype[param_dtype], reduce_dtype=dtype[reduce_dtype], buffer_dtype=torch.float32
    )
    return FSDPStrategy(
        auto_wrap_policy=classes,
        activation_checkpointing_policy=classes if activation_checkpointing else None,
        mixed_precision=mp,
        sharding_strategy=sharding_strategy,
        cpu_offload=cpu_offload,
        state_dict_type=state_dict_type,
    )
