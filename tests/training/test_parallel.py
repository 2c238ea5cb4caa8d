"""sora.training.parallel: activation checkpointing from outside, compile, FSDP2 and Ulysses sequence
parallelism, checked against one process on CPU (gloo); the trainer configs that select them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from sora.config import compose
from sora.models.dit import AVDiT
from sora.training.parallel import (
    FSDPConfig,
    apply_activation_checkpointing,
    checkpoint_every,
    model_parallel_strategy,
    parallelize,
    repeated_blocks,
)
from sora.training.run import build_trainer

ROOT = Path(__file__).resolve().parents[2]


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 16, 2, 4, 4, generator=g),
        torch.randn(2, 8, 6, generator=g),
        torch.rand(2, generator=g),
        torch.rand(2, generator=g),
        torch.randn(2, 3, 16, generator=g),
        torch.ones(2, 3, dtype=torch.bool),
    )


def _model():
    torch.manual_seed(0)
    model = AVDiT(hidden_size=32, depth=4, num_heads=2, text_dim=16, single_stream_depth=1)
    with torch.no_grad():  # leave adaLN-zero so the outputs (and gradients) are non-trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _recomputed_blocks(model, inputs) -> int:
    """Blocks whose forward runs again during backward (what checkpointing does)."""
    calls = []
    for block in repeated_blocks(model):
        inner = getattr(block, "_checkpoint_wrapped_module", block)
        inner.register_forward_pre_hook(lambda *a, b=inner: calls.append(b))  # (recompute stops early)
    v, a = model(*inputs, video_frame_seconds=4 / 24)
    n_forward = len(calls)
    (v.square().mean() + a.square().mean()).backward()
    return len(calls) - n_forward


def test_checkpointing_from_outside_keeps_outputs_grads_and_keys():
    plain, wrapped = _model(), _model()
    keys = list(plain.state_dict())
    assert apply_activation_checkpointing(wrapped, every=1) == 4
    assert list(wrapped.state_dict()) == keys  # the wrapper's prefix never reaches a checkpoint
    wrapped.load_state_dict(plain.state_dict())
    assert _recomputed_blocks(plain, _inputs()) == 0
    outs = []
    for model in (plain, wrapped):
        model.zero_grad()
        v, a = model(*_inputs(), video_frame_seconds=4 / 24)
        (v.square().mean() + a.square().mean()).backward()
        outs.append((v, [p.grad for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    assert len(outs[0][1]) == len(outs[1][1]) > 10
    for g1, g2 in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize(("switch", "recomputed"), [(False, 0), (True, 4), ("full", 4), (2, 2), (3, 2)])
def test_one_switch_checkpoints_every_kth_block(switch, recomputed):
    model = _model()
    parallelize(model, activation_checkpointing=switch)
    assert _recomputed_blocks(model, _inputs()) == recomputed


def test_bad_switch_and_models_without_blocks_are_refused():
    with pytest.raises(ValueError, match="activation_checkpointing must be"):
        checkpoint_every("sometimes")
    with pytest.raises(ValueError, match="no repeated blocks"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="dtypes"):
        FSDPConfig(param_dtype="int8")


def test_compile_is_in_place_per_block():
    model = _model()
    keys = list(model.state_dict())
    parallelize(model, compile=True)
    assert len(repeated_blocks(model)) == 4 and list(model.state_dict()) == keys
    assert all(block._compiled_call_impl is not None for block in repeated_blocks(model))


def test_vae_residual_blocks_are_the_repeated_blocks():
    cfg = compose("train", ["experiment=vae_video_tiny"])
    vae = instantiate(cfg.model.vae) if "vae" in cfg.model else instantiate(cfg.module.vae)
    n = len(repeated_blocks(vae))
    assert n >= 2 and all(type(b).__name__ == "ResBlock3d" for b in repeated_blocks(vae))
    keys = list(vae.state_dict())
    assert apply_activation_checkpointing(vae, every=1) == n and list(vae.state_dict()) == keys


def test_fsdp_trainer_config_builds_the_model_parallel_strategy():
    from lightning.pytorch.strategies import ModelParallelStrategy

    cfg = compose(
        "train", ["experiment=dit_tiny", "trainer=fsdp", "trainer.strategy.sequence_parallel_size=2"]
    )
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.num_nodes == 1
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, ModelParallelStrategy)
    assert strategy.fsdp_config == FSDPConfig("bfloat16", "float32", False, True)
    with pytest.raises(ValueError, match="sequence_parallel_size"):
        model_parallel_strategy(sequence_parallel_size=0)


def test_ddp_config_picks_the_available_accelerator():
    cfg = compose("train", ["experiment=dit_tiny", "trainer=ddp"])
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.strategy == "ddp"
    trainer = build_trainer(cfg, logger=False, enable_checkpointing=False)
    assert trainer.accelerator.__class__.__name__ == (
        "CUDAAccelerator" if torch.cuda.is_available() else "CPUAccelerator"
    )


def _distributed(check: str, world: int, tmp_path: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("distributed_check.py")
    proc = subprocess.run(
        [sys.executable, str(script), check, str(world), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.parametrize(
    ("check", "world"),
    [
        ("fsdp", 2),
        ("sp", 2),
        pytest.param("sp_checkpoint", 2, marks=pytest.mark.slow),
        pytest.param("sp_fsdp", 4, marks=pytest.mark.slow),
    ],
)
def test_sharded_and_sequence_parallel_match_one_process(check, world, tmp_path):
    """Loss and every gradient (gathered from the shards) equal the single-process model's: float32 sums in
    another order, so within 1e-6 of gradients of size ~0.1."""
    for r in _distributed(check, world, tmp_path):
        assert r["params_checked"] >= r["params"] - 1  # all but the unused null caption
        assert r["loss_diff"] < 1e-6
        assert r["grad_diff"] < 1e-6 < r["grad_scale"]


# ---- real train.py runs (subprocesses: Lightning launches its ranks by re-running the script) -------------


@pytest.fixture(scope="module")
def tiny_latents(tmp_path_factory):
    """A few latent shards of the synthetic world (as tests/conftest.py's latent_shards, built here so the
    subprocesses below get plain paths)."""
    from data_pipelines.latents import encode_shards
    from data_pipelines.synthetic import WorldConfig, write_shards
    from sora.checkpoint import build_module

    out = tmp_path_factory.mktemp("parallel_data")
    write_shards(
        WorldConfig(duration=1.0), out / "world", num_clips=8, seed=123, clips_per_shard=4, num_workers=1
    )
    cfg = compose("train", ["experiment=dit_tiny"])
    torch.manual_seed(0)
    video, audio = build_module(cfg.model.video_vae), build_module(cfg.model.audio_vae)
    encode_shards(video, audio, str(out / "world" / "shard-*.tar"), out / "latents", buckets={"64px": [17]})
    return out / "latents"


def _train(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _dit_args(latents: Path, out: Path) -> list[str]:
    return [
        "experiment=dit_tiny",
        "logger=csv",
        f"out_dir={out}",
        f"data.train_urls={latents}/shard-*.tar",
        "data.batch_size=2",
        "data.max_tokens=null",
        "data.num_workers=0",
        "data.resampled=false",
        "data.epoch_samples=null",
        "callbacks.samples=null",
        "trainer.enable_progress_bar=false",
        "trainer.max_steps=2",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "fsdp_sp"])
def test_train_py_steps_under_each_strategy_and_the_checkpoint_loads_unsharded(
    strategy, tiny_latents, tmp_path
):
    """A few real steps on 2 CPU processes; the checkpoint (gathered on rank 0) rebuilds a plain network."""
    from sora.checkpoint import load_network_from_checkpoint

    trainer = {
        "ddp": ["trainer=ddp"],
        "fsdp": ["trainer=fsdp"],
        "fsdp_sp": [
            "trainer=fsdp",
            "trainer.strategy.sequence_parallel_size=2",
            "module.activation_checkpointing=2",
        ],
    }[strategy]
    out = tmp_path / "run"
    _train(
        [*_dit_args(tiny_latents, out), *trainer, "trainer.accelerator=cpu", "trainer.devices=2"], tmp_path
    )
    ckpt = out / "checkpoints" / "last.ckpt"
    dit, _ = load_network_from_checkpoint(ckpt, "dit")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert all(not type(v).__name__.startswith("DTensor") for v in state.values())
    assert any(k.startswith("dit.blocks.0.") for k in state) and not any(
        "_checkpoint_wrapped" in k for k in state
    )
    assert sum(p.numel() for p in dit.parameters()) == sum(
        v.numel() for k, v in state.items() if k.startswith("dit.")
    )


@pytest.mark.slow
def test_video_vae_trains_under_fsdp2_with_checkpointing(tiny_latents, tmp_path):
    """The VAE takes the same path: residual blocks checkpointed and sharded, latent statistics measured on a
    gathered copy at the end, a checkpoint that rebuilds a plain network."""
    from sora.checkpoint import load_network_from_checkpoint

    out = tmp_path / "vae"
    args = [
        "experiment=vae_video_tiny",
        "logger=csv",
        f"out_dir={out}",
        f"data.train_urls={tiny_latents.parent / 'world'}/shard-*.tar",
        "data.num_workers=0",
        "data.val_urls=null",
        "trainer.enable_progress_bar=false",
        "trainer.max_steps=2",
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "module.activation_checkpointing=true",
    ]
    proc = _train(args, tmp_path)
    assert "latent stats: mean" in proc.stderr + (out / "train.log").read_text()
    vae, _ = load_network_from_checkpoint(out / "checkpoints" / "last.ckpt", "vae")
    assert type(vae).__name__ == "CausalVideoVAE"


@pytest.mark.slow
def test_sweep_jobs_get_their_own_folders(tiny_latents, tmp_path):
    """`-m` with two values: each job trains and checkpoints in <out_dir>/multirun/<job number>."""
    out = tmp_path / "sweep"
    _train(["-m", *_dit_args(tiny_latents, out), "trainer.max_steps=1", "seed=0,1"], tmp_path)
    for job, seed in ((0, 0), (1, 1)):
        folder = out / "multirun" / str(job)
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert f"seed: {seed}" in (folder / "config.yaml").read_text()


def test_slurm_launcher_composes_with_any_trainer():
    """hydra/launcher=slurm (the [slurm] extra) resolves its node count from the trainer, cpu included."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sora.config import CONF_DIR

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the optional [slurm] extra")
    for trainer, nodes in (("cpu", 1), ("ddp", 4)):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(
                "train",
                [
                    "experiment=dit_tiny",
                    f"trainer={trainer}",
                    f"trainer.num_nodes={nodes}",
                    "hydra/launcher=slurm",
                ],
                return_hydra_config=True,
            )
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher") and launcher.nodes == nodes


@pytest.mark.slow
def test_sweep_through_submitit_local_executor(tiny_latents, tmp_path):
    """The submitit launcher (as SLURM uses it) on this machine: jobs run in their own folders."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the optional [slurm] extra")
    out = tmp_path / "sweep"
    args = [*_dit_args(tiny_latents, out), "trainer.max_steps=1", "seed=0,1", "hydra/launcher=submitit_local"]
    _train(["-m", *args, "hydra.launcher.timeout_min=10"], tmp_path)
    for job in (0, 1):
        assert (out / "multirun" / str(job) / "checkpoints" / "last.ckpt").is_file()
