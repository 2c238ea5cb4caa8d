"""Exact resume (sora.training.resume): per-batch random state, resume=auto, a checkpoint on SIGTERM/SIGUSR1.

Fast tests train a tiny video VAE in-process (its posterior sample is drawn from the global generator). The
slow ones run the real experiments in subprocesses (CPU, 2 data workers), kill -9 one at a step picked at
random and check that `resume=auto` ends on the same bits as the run that was never interrupted.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from sora.training.ema import EMA
from sora.training.resume import (
    PreemptionCheckpoint,
    RandomState,
    batch_seed,
    find_last_checkpoint,
    resolve_ckpt_path,
)
from sora.training.vae_module import VideoVAEModule

ROOT = Path(__file__).resolve().parents[2]
VIDEO = {
    "_target_": "sora.models.video_vae.CausalVideoVAE",
    "latent_channels": 4,
    "base_channels": 4,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "patch_size": 2,
}
OPTIM = {"lr": 1e-3, "warmup_steps": 1, "total_steps": 6}
STEPS = 6


def test_batch_seed_is_a_function_of_seed_rank_and_batch():
    assert batch_seed(0, 0, 5) == batch_seed(0, 0, 5)
    seeds = {batch_seed(s, r, b) for s in (0, 1) for r in (0, 1) for b in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="must be >= 0"):
        batch_seed(-1, 0, 0)


# ---- in-process: a tiny video VAE, checkpoints every 2 steps ----------------------------------------------


class _Noisy(nn.Module):
    """Draws from numpy and python ``random`` too (the VAE draws from torch): every global generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + 0.01 * float(np.random.randn()) + 0.01 * random.random())


class _NoisyVAEModule(VideoVAEModule):
    def compute_loss(self, batch: dict):
        return super().compute_loss({**batch, "video": _Noisy()(batch["video"])})


def _batches(n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.rand(2, 3, 5, 16, 16, generator=g) * 2 - 1, "caption": ["a ball"] * 2}
    return DataLoader([batch] * n, batch_size=None)  # one batch repeated: the data position does not matter


def _fit(root: Path, callbacks: list, ckpt_path: str | None = None, random_state: bool = True) -> L.Trainer:
    torch.manual_seed(0)  # the same initial weights for every run; the resumed one loads its own anyway
    module = _NoisyVAEModule(vae=VIDEO, optim=OPTIM, num_recon_clips=0)
    every2 = ModelCheckpoint(
        dirpath=root / "checkpoints",
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=2,
        save_top_k=-1,
    )
    # extra callbacks go first: Lightning must still run PreemptionCheckpoint after the EMA (Checkpoint: last)
    cbs = [*callbacks, EMA(decay=0.9), *([RandomState(seed=3)] if random_state else []), every2]
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=cbs,
    )
    trainer.fit(module, _batches(), ckpt_path=ckpt_path)
    return trainer


def _final_state(trainer: L.Trainer) -> dict[str, torch.Tensor]:
    ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
    return {**trainer.lightning_module.state_dict(), **{f"ema.{k}": v for k, v in ema.shadow.items()}}


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    return _final_state(_fit(tmp_path_factory.mktemp("reference"), []))


def test_resume_continues_bitwise(reference, tmp_path):
    first = _fit(tmp_path / "first", [])
    assert _differing(_final_state(first), reference) == []  # the run itself is deterministic
    resumed = _fit(tmp_path / "resumed", [], ckpt_path=str(tmp_path / "first/checkpoints/step000002.ckpt"))
    assert resumed.global_step == STEPS
    assert _differing(_final_state(resumed), reference) == []


def test_resume_without_random_state_is_not_exact(tmp_path):
    """The bug RandomState fixes: without it the steps after a resume draw other posterior samples."""
    full = _final_state(_fit(tmp_path / "full", [], random_state=False))
    resumed = _fit(
        tmp_path / "resumed",
        [],
        random_state=False,
        ckpt_path=str(tmp_path / "full/checkpoints/step000002.ckpt"),
    )
    assert len(_differing(_final_state(resumed), full)) > 10


class _SignalAt(L.Callback):
    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_writes_a_checkpoint_and_stops_then_resume_is_exact(reference, tmp_path, signum):
    before = signal.getsignal(signum)
    preemption = PreemptionCheckpoint(dirpath=str(tmp_path / "checkpoints"))
    with pytest.raises(SystemExit) as stopped:
        _fit(tmp_path, [_SignalAt(3, signum), preemption])
    assert stopped.value.code is None  # exit status 0
    assert signal.getsignal(signum) == before, "the handlers of before the fit are back"
    saved = tmp_path / "checkpoints" / "preempted-step000003.ckpt"
    assert saved.is_file() and torch.load(saved, weights_only=True)["global_step"] == 3
    assert resolve_ckpt_path("auto", None, tmp_path / "checkpoints") == str(saved)  # newer than step000002
    resumed = _fit(tmp_path / "resumed", [], ckpt_path=str(saved))
    assert _differing(_final_state(resumed), reference) == []


def test_preemption_rejects_unknown_signals():
    with pytest.raises(ValueError, match="unknown signal 'SIGFOO'"):
        PreemptionCheckpoint(dirpath="x", signals=["SIGTERM", "SIGFOO"])


# ---- resume=auto ------------------------------------------------------------------------------------------


def _fake_ckpt(path: Path, step: int) -> None:
    torch.save({"global_step": step, "loops": {}, "state_dict": {"w": torch.zeros(3)}}, path)


def test_resume_auto_picks_the_highest_step_and_skips_broken_files(tmp_path):
    d = tmp_path / "checkpoints"
    assert resolve_ckpt_path("auto", None, d) is None  # no folder yet: a fresh start
    assert resolve_ckpt_path("auto", "init.ckpt", d) == "init.ckpt"  # requeued before its first checkpoint
    d.mkdir()
    _fake_ckpt(d / "step000008.ckpt", 8)
    _fake_ckpt(d / "last.ckpt", 12)
    _fake_ckpt(d / "step000012.ckpt", 12)
    data = (d / "step000012.ckpt").read_bytes()
    (d / "step000016.ckpt").write_bytes(data[: len(data) // 2])  # cut short by a kill during the write
    torch.save({"weights": torch.zeros(2)}, d / "other.ckpt")  # not a training checkpoint
    assert find_last_checkpoint(d).name in ("last.ckpt", "step000012.ckpt")
    assert resolve_ckpt_path("auto", "init.ckpt", d) in (str(d / "last.ckpt"), str(d / "step000012.ckpt"))
    assert resolve_ckpt_path(None, "given.ckpt", d) == "given.ckpt"  # without resume=auto: as given
    assert resolve_ckpt_path(False, None, d) is None
    with pytest.raises(ValueError, match="resume must be null, false or one of \\['auto'\\], got 'yes'"):
        resolve_ckpt_path("yes", None, d)


# ---- subprocesses: the real experiments, kill -9 at a random step -----------------------------------------

MAX_STEPS, EVERY = 20, 3
SMALL_VAE = [
    "model.vae.base_channels=4",
    "model.vae.channel_mult=[1,2,2]",
    "model.vae.num_res_blocks=1",
    "model.vae.patch_size=2",
    "model.vae.latent_channels=4",
]


def _overrides(experiment: str, out: Path, world: Path, latents: Path | None) -> list[str]:
    common = [
        f"experiment={experiment}",
        "trainer=cpu",
        f"trainer.max_steps={MAX_STEPS}",
        "logger=csv",
        f"out_dir={out}",
        "trainer.enable_progress_bar=false",
        f"callbacks.checkpoint.every_n_train_steps={EVERY}",
        "data.num_workers=2",
        "data.shuffle_buffer=4",
        # a weights-only checkpoint after every step in another folder: the test's view of the step reached
        f"+callbacks.tick={{_target_:lightning.pytorch.callbacks.ModelCheckpoint,dirpath:'{out}/ticks',"
        "filename:'{step}',auto_insert_metric_name:false,every_n_train_steps:1,save_top_k:1,"
        "save_weights_only:true}",
    ]
    if experiment.startswith("vae"):
        return [
            *common,
            f"data.train_urls={world}/shard-*.tar",
            "data.val_urls=null",
            "~data.buckets",
            "+data.buckets={64px: {5: [1.0, 2]}}",
            "trainer.val_check_interval=null",
            "trainer.limit_val_batches=0",
            "callbacks.latent_stats.num_batches=1",
            "module.optim.warmup_steps=2",
            *SMALL_VAE,
        ]
    # 8 clips, batches of 2 from 2 workers: 4 batches an epoch, so the runs cross epoch boundaries
    return [
        *common,
        f"data.train_urls={latents}/shard-*.tar",
        "data.batch_size=2",
        "data.max_tokens=null",
        "data.resampled=false",
        "data.epoch_samples=null",
        "callbacks.samples=null",
        "callbacks.throughput=null",
        "module.optim.warmup_steps=2",
        "module.image_prob=0.3",
    ]


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(args: list[str]) -> None:
    proc = _start(args)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]


def _wait_for_step(proc: subprocess.Popen, ticks: Path, step: int, timeout: float = 600) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = [int(p.stem) for p in ticks.glob("*.ckpt") if p.stem.isdigit()]
        if done and max(done) >= step:
            return max(done)
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()[-3000:]}"
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached in {timeout} s")


def _last(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_bits(resumed: dict, reference: dict) -> None:
    assert resumed["global_step"] == reference["global_step"] == MAX_STEPS
    weights = _differing(resumed["state_dict"], reference["state_dict"])
    ema = _differing(resumed["ema_state_dict"], reference["ema_state_dict"])
    assert (weights, ema) == ([], []), f"{len(weights)} weights, {len(ema)} EMA tensors differ"
    for a, b in zip(resumed["optimizer_states"], reference["optimizer_states"], strict=True):
        for key, state in a["state"].items():
            assert _differing(state, b["state"][key]) == []
    for key in ("VideoDataModule", "LatentDataModule"):  # the data position, per rank and worker
        assert resumed.get(key) == reference.get(key)


@pytest.fixture(scope="module")
def subprocess_references(tmp_path_factory, world_shards, latent_shards) -> dict:
    """The uninterrupted runs (one per experiment), made on first use."""
    cache: dict = {}

    def get(experiment: str) -> dict:
        if experiment not in cache:
            out = tmp_path_factory.mktemp(f"ref_{experiment}")
            _run(_overrides(experiment, out, world_shards, latent_shards))
            cache[experiment] = _last(out)
        return cache[experiment]

    return {"get": get, "world": world_shards, "latents": latent_shards}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["vae_video_tiny", "dit_tiny"])
def test_kill9_at_a_random_step_then_resume_auto_is_bitwise(experiment, subprocess_references, tmp_path):
    refs = subprocess_references
    reference = refs["get"](experiment)
    args = _overrides(experiment, tmp_path, refs["world"], refs["latents"])
    kill_after = random.Random(experiment).randint(EVERY + 1, MAX_STEPS - EVERY)
    proc = _start(args)
    reached = _wait_for_step(proc, tmp_path / "ticks", kill_after)
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert find_last_checkpoint(tmp_path / "checkpoints") is not None, "a periodic checkpoint to resume from"
    _run([*args, "resume=auto"])
    log = (tmp_path / "train.log").read_text()
    assert "resume=auto: continuing from" in log, f"killed after step {reached}"
    _assert_same_bits(_last(tmp_path), reference)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_exits_0_and_resume_auto_is_bitwise(subprocess_references, tmp_path):
    refs = subprocess_references
    reference = refs["get"]("dit_tiny")
    args = _overrides("dit_tiny", tmp_path, refs["world"], refs["latents"])
    proc = _start(args)
    _wait_for_step(proc, tmp_path / "ticks", 7)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    saved = sorted((tmp_path / "checkpoints").glob("preempted-step*.ckpt"))
    assert len(saved) == 1, list((tmp_path / "checkpoints").iterdir())
    step = torch.load(saved[0], weights_only=True)["global_step"]
    assert 7 <= step < MAX_STEPS
    assert "SIGTERM: checkpoint written" in (tmp_path / "train.log").read_text()
    _run([*args, "resume=auto"])
    assert f"resume=auto: continuing from {saved[0]}" in (tmp_path / "train.log").read_text()
    _assert_same_bits(_last(tmp_path), reference)
