"""Run by tests/training/test_parallel.py: CPU processes (gloo) check that FSDP2 and Ulysses sequence
parallelism (sora.training.parallel) compute what one process computes.

    python tests/training/distributed_check.py CHECK WORLD OUT_DIR

CHECK is ``fsdp`` (FSDP2 over WORLD ranks, each rank its own batch), ``sp`` (WORLD ranks share one sample's
tokens), ``sp_fsdp`` (a 2 x 2 mesh: 2 data-parallel groups of 2 sequence-parallel ranks) or ``sp_checkpoint``
(``sp`` with activation checkpointing). Every rank compares the loss and every parameter gradient with the
single-process model on the whole batch and writes ``OUT_DIR/rank<r>.json`` with the largest differences.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sora.models.dit import AVDiT
from sora.training.parallel import FSDPConfig, parallelize

BATCH = 4


def model() -> AVDiT:
    torch.manual_seed(0)
    # Odd token counts (3 text, 2 * 3 * 3 = 18 video with patch 1x2x2 of 2x6x6... 9 audio) exercise padding.
    net = AVDiT(hidden_size=32, depth=3, num_heads=4, text_dim=16, single_stream_depth=1)
    with torch.no_grad():  # leave adaLN-zero so outputs and gradients are non-trivial
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def inputs() -> tuple:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(BATCH, 3, dtype=torch.bool)
    mask[1, 2] = False  # a padded caption
    return (
        torch.randn(BATCH, 16, 2, 6, 6, generator=g),
        torch.randn(BATCH, 8, 9, generator=g),
        torch.rand(BATCH, 2, generator=g),  # per-frame timesteps: conditioning groups of 9 tokens
        torch.rand(BATCH, generator=g),
        torch.randn(BATCH, 3, 16, generator=g),
        mask,
    )


def loss_of(net: torch.nn.Module, batch: tuple) -> torch.Tensor:
    v, a = net(*batch, video_frame_seconds=4 / 24)
    return v.square().mean() + a.square().mean()


def worker(rank: int, world: int, check: str, out_dir: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh

    sp = {"fsdp": 1, "sp": world, "sp_checkpoint": world, "sp_fsdp": 2}[check]
    mesh = init_device_mesh("cpu", (world // sp, sp), mesh_dim_names=("data_parallel", "tensor_parallel"))
    batch = inputs()

    reference = model()
    ref_loss = loss_of(reference, batch)
    ref_loss.backward()

    net = model()
    parallelize(
        net,
        activation_checkpointing=check == "sp_checkpoint",
        device_mesh=mesh,
        fsdp=FSDPConfig(param_dtype="float32", reduce_dtype="float32"),
    )
    # Each data-parallel group takes its share of the batch; FSDP averages gradients over the groups.
    dp_rank, dp_world = mesh["data_parallel"].get_local_rank(), mesh["data_parallel"].size()
    share = BATCH // dp_world
    local = tuple(x[dp_rank * share : (dp_rank + 1) * share] for x in batch)
    loss = loss_of(net, local)
    loss.backward()
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    mean_loss = torch.stack(losses).mean()  # every rank of an SP group holds its group's loss

    grad_diff, checked = 0.0, 0
    ref_grads = dict(reference.named_parameters())
    for name, p in net.named_parameters():
        name = name.replace("_checkpoint_wrapped_module.", "")
        if ref_grads[name].grad is None:  # unused here (e.g. the null caption without drop_text)
            assert p.grad is None, name
            continue
        g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        grad_diff = max(grad_diff, float((g - ref_grads[name].grad).abs().max()))
        checked += 1
    result = {
        "loss_diff": float((mean_loss - ref_loss).abs()),
        "grad_diff": grad_diff,
        "grad_scale": max(float(p.grad.abs().max()) for p in reference.parameters() if p.grad is not None),
        "params_checked": checked,
        "params": sum(1 for _ in reference.parameters()),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    check, world, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    mp.spawn(worker, args=(world, check, out, free_port()), nprocs=world, join=True)
