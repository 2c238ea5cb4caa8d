"""The one place that knows about activation checkpointing, torch.compile, FSDP2 and sequence parallelism.

They are applied from outside the model, in torchtitan's fixed order (:func:`parallelize`):

1. activation checkpointing: each repeated block is wrapped in ``checkpoint_wrapper`` (every block, or every
   k-th), so model code never mentions recomputation; one switch, ``activation_checkpointing``;
2. ``torch.compile`` per block (in place, so state_dict keys do not change);
3. FSDP2: ``fully_shard`` per block, then on the root, over the data-parallel dimension of the device mesh,
   with a mixed-precision policy (bf16 compute, fp32 master weights and gradient reduction) and optional CPU
   offload.

Sequence parallelism (DeepSpeed-Ulysses, as in xDiT): each rank of a sequence-parallel group holds a slice of
every token stream; around the joint attention an all-to-all trades the token split for a head split, so each
rank attends over the whole sequence with ``heads / degree`` heads, and a second all-to-all trades back
(:class:`UlyssesAttention`). Everything else in a block is per token. It combines with FSDP2 on a 2-D mesh
``(data_parallel, sequence_parallel)``; Lightning's mesh calls the second dimension ``tensor_parallel``.

The repeated blocks are found by class name (:data:`REPEATED_BLOCKS`); sequence parallelism additionally
needs the AV-DiT's two hooks (``sequence_parallel`` on the model, ``attention_fn`` on each block). The
LightningModules call :func:`configure_parallelism` from ``configure_model``; ``trainer=fsdp`` selects
:func:`model_parallel_strategy` (Lightning's ``ModelParallelStrategy``), which runs on CPU (gloo) as well as
GPU (nccl).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

REPEATED_BLOCKS = ("AVDiTBlock", "ResBlock3d", "ResBlock1d")
"""Class names of the repeated blocks that are checkpointed, compiled and sharded one by one: the AV-DiT's
transformer blocks and the VAEs' residual blocks."""
FORWARD_METHODS = ("encode",)
"""Methods that the other trained networks (the text encoder) are called through instead of ``forward``. Not
registered on a main network whose ``forward`` calls them itself (the VAEs' ``encode``/``decode``): nested
unshard/reshard of the same FSDP unit frees weights the backward still needs."""
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _block_sites(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, block) of every outermost repeated block of ``model``, in module order."""
    sites: list[tuple[nn.Module, str, nn.Module]] = []

    def walk(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            inner = getattr(child, "_checkpoint_wrapped_module", child)
            if type(inner).__name__ in REPEATED_BLOCKS:
                sites.append((parent, name, child))
            else:
                walk(child)

    walk(model)
    return sites


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer/resnet blocks of ``model`` (classes named in :data:`REPEATED_BLOCKS`)."""
    return [block for _, _, block in _block_sites(model)]


def checkpoint_every(activation_checkpointing: bool | int | str | None) -> int:
    """The one switch, as a period: ``false``/``none``/0 -> 0 (off), ``true``/``full`` -> 1 (every block),
    an int k -> every k-th block."""
    value = activation_checkpointing
    if value is None or value is False or value in ("none", "off"):
        return 0
    if value is True or value == "full":
        return 1
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(f"activation_checkpointing must be false, true, 'full' or an int k >= 0, got {value!r}")


def apply_activation_checkpointing(model: nn.Module, every: int = 1) -> int:
    """Wrap every ``every``-th repeated block in ``checkpoint_wrapper`` (non-reentrant), in place; returns the
    number wrapped. The wrapper's state_dict hooks strip its prefix, so keys do not change."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointWrapper,
        checkpoint_wrapper,
    )

    if every <= 0:
        return 0
    sites = _block_sites(model)
    if not sites:
        raise ValueError(f"{type(model).__name__} has no repeated blocks ({', '.join(REPEATED_BLOCKS)})")
    wrapped = 0
    for i, (parent, name, block) in enumerate(sites):
        if i % every == 0 and not isinstance(block, CheckpointWrapper):
            setattr(parent, name, checkpoint_wrapper(block))  # ModuleList children are set by index name
            wrapped += 1
    return wrapped


@dataclass
class FSDPConfig:
    """FSDP2 settings: compute dtype (parameters are cast to it), gradient-reduction dtype, CPU offload of
    parameters/gradients/optimizer state, and whether blocks free their gathered weights after forward."""

    param_dtype: str = "bfloat16"
    reduce_dtype: str = "float32"
    cpu_offload: bool = False
    reshard_after_forward: bool = True

    def __post_init__(self) -> None:
        if self.param_dtype not in DTYPES or self.reduce_dtype not in DTYPES:
            raise ValueError(
                f"fsdp dtypes must be one of {sorted(DTYPES)}, got {self.param_dtype}/{self.reduce_dtype}"
            )


def fsdp_mesh(device_mesh):
    """The mesh FSDP2 shards over and averages gradients on: with sequence parallelism, every rank of the
    ``(data_parallel, tensor_parallel)`` mesh (flattened), otherwise the data-parallel dimension. Each rank of
    a sequence-parallel group holds the gradient of its own tokens only, so those must add up rather than
    average: :class:`_GatherTokens` scales them by the SP degree, which the average over the flattened mesh
    divides out again (FSDP2's own divide factor needs ``PREMUL_SUM``, which gloo lacks)."""
    names = device_mesh.mesh_dim_names or ()
    if "tensor_parallel" not in names:
        return device_mesh
    if device_mesh["tensor_parallel"].size() == 1:
        return device_mesh["data_parallel"]
    return device_mesh["data_parallel", "tensor_parallel"]._flatten("data_sequence")


def apply_fsdp(
    model: nn.Module, device_mesh, config: FSDPConfig, forward_methods: tuple[str, ...] = ()
) -> nn.Module:
    """``fully_shard`` each repeated block, then the root (see :func:`fsdp_mesh` for the mesh)."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    mesh = fsdp_mesh(device_mesh)
    mp = MixedPrecisionPolicy(
        param_dtype=DTYPES[config.param_dtype], reduce_dtype=DTYPES[config.reduce_dtype]
    )
    offload = CPUOffloadPolicy() if config.cpu_offload else OffloadPolicy()
    for unit in [*repeated_blocks(model), model]:
        last = unit is model  # the root's weights are needed again at once by the backward
        fully_shard(
            unit,
            mesh=mesh,
            mp_policy=mp,
            offload_policy=offload,
            reshard_after_forward=config.reshard_after_forward and not last,
        )
    for name in forward_methods:  # entry points other than forward gather the weights too
        if callable(getattr(model, name, None)):
            register_fsdp_forward_method(model, name)
    return model


def parallelize(
    model: nn.Module,
    *,
    activation_checkpointing: bool | int | str | None = False,
    compile: bool = False,
    compile_mode: str | None = None,
    device_mesh=None,
    fsdp: FSDPConfig | dict | None = None,
) -> nn.Module:
    """Apply, in this order and in place: activation checkpointing, compile, sequence parallelism (when the
    mesh has a ``tensor_parallel`` dimension of size > 1) and FSDP2 (when a mesh is given). Returns ``model``.

    ``device_mesh``: Lightning's 2-D mesh ``(data_parallel, tensor_parallel)``, or None for one process.
    """
    apply_activation_checkpointing(model, checkpoint_every(activation_checkpointing))
    if compile:
        for block in repeated_blocks(model):
            block.compile(mode=compile_mode)
    if device_mesh is None:
        return model
    names = device_mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
        apply_sequence_parallel(model, device_mesh["tensor_parallel"].get_group())
    cfg = fsdp if isinstance(fsdp, FSDPConfig) else FSDPConfig(**(fsdp or {}))
    return apply_fsdp(model, device_mesh, cfg)


# ---- strategies --------------------------------------------------------------------------------------------


def model_parallel_strategy(
    *,
    sequence_parallel_size: int = 1,
    param_dtype: str = "bfloat16",
    reduce_dtype: str = "float32",
    cpu_offload: bool = False,
    reshard_after_forward: bool = True,
    save_distributed_checkpoint: bool = False,
    process_group_backend: str | None = None,
):
    """Lightning's ``ModelParallelStrategy`` for FSDP2 (+ Ulysses) on a ``(data_parallel, sequence_parallel)``
    mesh: the processes form groups of ``sequence_parallel_size`` consecutive ranks that share a sample, and
    FSDP2 shards over the other dimension with the given policy (:class:`FSDPConfig`, kept on the strategy as
    ``fsdp_config`` for the modules' ``configure_model``).

    ``save_distributed_checkpoint=false`` gathers full weights into one ``.ckpt`` file (loads anywhere, e.g.
    ``sora.export``); ``true`` writes a folder of per-rank shards (faster at scale; ``sora.export``
    consolidates it).
    """
    from lightning.pytorch.strategies import ModelParallelStrategy

    if sequence_parallel_size < 1:
        raise ValueError(f"sequence_parallel_size must be >= 1, got {sequence_parallel_size}")
    fsdp_config = FSDPConfig(param_dtype, reduce_dtype, cpu_offload, reshard_after_forward)

    class SoraModelParallelStrategy(ModelParallelStrategy):
        def setup_environment(self) -> None:
            world = self.num_processes * self.num_nodes
            if world % sequence_parallel_size:
                raise ValueError(
                    f"sequence_parallel_size={sequence_parallel_size} must divide the number of processes "
                    f"({self.num_processes} per node x {self.num_nodes} nodes)"
                )
            self._tensor_parallel_size = sequence_parallel_size
            self._data_parallel_size = world // sequence_parallel_size
            super().setup_environment()

    strategy = SoraModelParallelStrategy(
        save_distributed_checkpoint=save_distributed_checkpoint, process_group_backend=process_group_backend
    )
    strategy.fsdp_config = fsdp_config
    return strategy


def configure_parallelism(
    pl_module,
    main: nn.Module,
    *,
    activation_checkpointing: bool | int | str | None = False,
    compile: bool = False,
    others: tuple[nn.Module, ...] = (),
) -> None:
    """What a LightningModule's ``configure_model`` does: :func:`parallelize` its main network with the
    trainer's mesh (None without ``trainer=fsdp``), and shard its other trainable networks (text encoder,
    discriminator) with the same policy so their gradients are reduced too. Runs once."""
    if getattr(pl_module, "_parallelized", False):
        return
    mesh = pl_module.device_mesh
    fsdp = None
    if mesh is not None:
        fsdp = getattr(pl_module.trainer.strategy, "fsdp_config", None) or FSDPConfig()
    parallelize(
        main, activation_checkpointing=activation_checkpointing, compile=compile, device_mesh=mesh, fsdp=fsdp
    )
    if mesh is not None:
        for net in others:
            if net is not None and any(p.requires_grad for p in net.parameters()):
                apply_fsdp(net, mesh, fsdp, FORWARD_METHODS)
    pl_module._parallelized = True


def data_parallel_rank_and_world(trainer) -> tuple[int, int]:
    """The rank and size of the data-parallel dimension: ranks of one sequence-parallel group read the same
    samples."""
    mesh = getattr(getattr(trainer, "strategy", None), "_device_mesh", None)
    if mesh is not None and "data_parallel" in (mesh.mesh_dim_names or ()):
        dp = mesh["data_parallel"]
        return dp.get_local_rank(), dp.size()
    return trainer.global_rank, trainer.world_size


# ---- Ulysses sequence parallelism --------------------------------------------------------------------------


class _AllToAll(torch.autograd.Function):
    """Split ``x`` into ``world`` chunks along ``scatter_dim``, send chunk j to rank j of ``group``, and
    concatenate what arrives along ``gather_dim`` (rank-major); the backward is the reverse exchange.
    (``torch.distributed.nn.functional.all_to_all`` falls back to per-rank scatters on gloo that take group
    ranks for global ones, so it fails on sub-groups; ``all_to_all_single`` works on gloo and nccl.)"""

    @staticmethod
    def forward(ctx, x: Tensor, group, scatter_dim: int, gather_dim: int) -> Tensor:
        ctx.group, ctx.scatter_dim, ctx.gather_dim = group, scatter_dim, gather_dim
        world = torch.distributed.get_world_size(group)
        send = torch.stack(x.chunk(world, dim=scatter_dim)).contiguous()  # (world, ...)
        recv = torch.empty_like(send)
        torch.distributed.all_to_all_single(recv, send, group=group)
        return torch.cat(recv.unbind(0), dim=gather_dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _AllToAll.apply(grad, ctx.group, ctx.gather_dim, ctx.scatter_dim), None, None, None


class _GatherTokens(torch.autograd.Function):
    """All-gather local token slices (B, n, D) into (B, P * n, D) on every rank of ``group``. Every rank then
    computes the same loss from the same whole output, so the backward hands each rank its own slice of the
    (identical) output gradient, times the SP degree P: the parameter gradients of one group's ranks must
    add up, and FSDP2 averages them over the flattened mesh (see :func:`fsdp_mesh`)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        world = torch.distributed.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(world)]
        torch.distributed.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        world, rank = torch.distributed.get_world_size(ctx.group), torch.distributed.get_rank(ctx.group)
        return grad.chunk(world, dim=1)[rank] * world, None


def _all_to_all(x: Tensor, group, scatter_dim: int, gather_dim: int) -> Tensor:
    return _AllToAll.apply(x, group, scatter_dim, gather_dim)


class UlyssesAttention:
    """Attention over the whole sequence from token-sharded q, k, v: (B, H, n, D) local tokens -> all-to-all
    -> (B, H / P, P * n, D) -> attention with the full key mask -> all-to-all back -> (B, H, n, D)."""

    def __init__(self, group, attention_fn) -> None:
        self.group, self.attention_fn = group, attention_fn

    def __call__(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, backend: str
    ) -> Tensor:
        world = torch.distributed.get_world_size(self.group)
        if q.shape[1] % world:
            raise ValueError(f"Ulysses needs num_heads ({q.shape[1]}) divisible by the SP degree ({world})")
        q, k, v = (_all_to_all(x, self.group, scatter_dim=1, gather_dim=2) for x in (q, k, v))
        out = self.attention_fn(q, k, v, key_padding_mask, backend)  # (B, H/P, N, D)
        return _all_to_all(out, self.group, scatter_dim=2, gather_dim=1)  # (B, H, n, D)


class TokenSharder:
    """Shards the AV-DiT's token streams over a sequence-parallel group and gathers them back.

    Each stream (text, video, audio) of ``N_s`` tokens is padded to a multiple of the degree ``P`` and rank r
    keeps its r-th contiguous slice; the per-stream conditioning is expanded to one row per token where it is
    not per sample. The key mask handed to the blocks is the full padded mask in the all-to-all's rank-major
    order, padding masked out, so attention sees exactly the unsplit sequence (permuted, which attention does
    not notice since RoPE is applied per token before the exchange).
    """

    def __init__(self, group) -> None:
        self.group = group

    def _world_rank(self) -> tuple[int, int]:
        return torch.distributed.get_world_size(self.group), torch.distributed.get_rank(self.group)

    def shard(
        self, xs: list[Tensor], conds: list[Tensor], cos: Tensor, sin: Tensor, key_mask: Tensor
    ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor, Tensor, list[int]]:
        """xs each (B, N_s, D); conds each (B, G_s, D); cos/sin (Bs, 1, N, d); key_mask (B, N) -> the local
        slices, the local cos/sin, the full rank-major key mask, and the original lengths N_s."""
        world, rank = self._world_rank()
        lengths = [x.shape[1] for x in xs]
        per = [-(-n // world) for n in lengths]  # local tokens per stream

        def local(t: Tensor, dim: int, s: int, fill: float | bool = 0) -> Tensor:
            pad = per[s] * world - lengths[s]
            if pad:
                shape = list(t.shape)
                shape[dim] = pad
                t = torch.cat([t, t.new_full(shape, fill)], dim=dim)
            return t.narrow(dim, rank * per[s], per[s])

        xs_local = [local(x, 1, s) for s, x in enumerate(xs)]
        conds_local = []
        for s, c in enumerate(conds):
            if c.shape[1] != 1:  # per-frame or per-token groups -> one row per token, then slice
                c = c.repeat_interleave(lengths[s] // c.shape[1], dim=1)
                c = local(c, 1, s)
            conds_local.append(c)
        splits_cs = [t.split(lengths, dim=2) for t in (cos, sin)]
        cos_l, sin_l = (
            torch.cat([local(p, 2, s) for s, p in enumerate(parts)], dim=2) for parts in splits_cs
        )
        masks = key_mask.split(lengths, dim=1)
        padded = [
            torch.cat([m, m.new_zeros(m.shape[0], per[s] * world - lengths[s])], dim=1)
            for s, m in enumerate(masks)
        ]
        full = torch.cat(
            [padded[s].narrow(1, r * per[s], per[s]) for r in range(world) for s in range(len(xs))], dim=1
        )
        return xs_local, conds_local, cos_l, sin_l, full, lengths

    def gather(self, xs: list[Tensor], lengths: list[int]) -> list[Tensor]:
        """Local slices (B, n_s, D) -> whole streams (B, N_s, D) on every rank (differentiable)."""
        return [_GatherTokens.apply(x, self.group)[:, :n] for x, n in zip(xs, lengths)]


def apply_sequence_parallel(model: nn.Module, group) -> nn.Module:
    """Ulysses on the AV-DiT: shard tokens after embedding, all-to-all around each block's attention."""
    from sora.models.layers import attention

    if not hasattr(model, "sequence_parallel"):
        raise ValueError(
            f"{type(model).__name__} has no sequence_parallel hook (only the AV-DiT supports SP)"
        )
    model.sequence_parallel = TokenSharder(group)
    for block in repeated_blocks(model):
        inner = getattr(block, "_checkpoint_wrapped_module", block)
        inner.attention_fn = UlyssesAttention(group, attention)
    return model


def full_state_dict(state: dict) -> dict:
    """``state`` with every DTensor gathered into a plain tensor (a collective: every rank calls it)."""
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}


def plain_copy(module: nn.Module, build) -> nn.Module:
    """A single-process copy of ``module``: ``copy.deepcopy`` of a plain module; for an FSDP2-sharded one
    (which cannot be deep-copied), ``build()`` a fresh network and load the gathered weights (every rank calls
    it)."""
    import copy

    state = module.state_dict()
    if not any(hasattr(v, "full_tensor") for v in state.values()):
        return copy.deepcopy(module)
    net = build()
    net.load_state_dict(full_state_dict(state))
    return net.to(next(iter(state.values())).device)
