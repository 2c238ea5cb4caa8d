"""Exports travel: copied elsewhere, with the training folder and the text encoder's source folder deleted, an
export loads in a fresh process and samples bitwise the clip its checkpoint samples; the model card and
config.json record where it came from; loading checks everything before allocating."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sora.export import export
from sora.pipeline import AVPipeline, GenerationRequest

ROOT = Path(__file__).resolve().parents[2]
REQUEST = {"prompt": "a red ball falls", "seed": 7, "steps": 2}
WORD = {
    "_target_": "sora.models.text.WordTextEncoder",
    "dim": 16,
    "depth": 1,
    "num_heads": 2,
    "vocab_size": 512,
}
SAMPLE = """
import sys
import numpy as np
from sora.pipeline import AVPipeline, GenerationRequest
pipe = AVPipeline.from_pretrained(sys.argv[1])
clip = pipe.generate(GenerationRequest(**{request!r}))
np.savez(sys.argv[2], video=clip.video, audio=clip.audio)
"""
DATA_STATE = {  # what Lightning stores for the DataModule (its state_dict under its class name)
    "version": 1,
    "world_size": 2,
    "num_workers": 0,
    "ranks": [
        {
            "rank": 0,
            "epoch": 3,
            "positions": [],
            "samples_consumed": 2468,
            "skipped": {"decode": 2},
            "filtered": 1,
        },
        {
            "rank": 1,
            "epoch": 3,
            "positions": [],
            "samples_consumed": 2468,
            "skipped": {"decode": 1},
            "filtered": 0,
        },
    ],
}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def sample_in_fresh_process(folder: Path, tmp_path: Path) -> dict:
    out = tmp_path / "clip.npz"
    subprocess.run(
        [sys.executable, "-c", SAMPLE.format(request=REQUEST), str(folder), str(out)],
        cwd=tmp_path,
        env=_env(),
        check=True,
        timeout=600,
    )
    return dict(np.load(out))


def write_checkpoint(run_dir: Path, base_ckpt: Path, text_encoder: dict) -> Path:
    """A DiT-stage checkpoint as a training run leaves it: ``<run>/checkpoints/last.ckpt`` with EMA weights,
    step counters and the DataModule state, and the run's resolved ``<run>/config.yaml``."""
    from sora.checkpoint import build_module

    base = torch.load(base_ckpt, weights_only=True)
    hp = {**base["hyper_parameters"], "text_encoder": text_encoder, "flow": {"shift": "tokens"}}
    hp["dit"] = {**hp["dit"], "text_dim": 16}
    state = {k: v for k, v in base["state_dict"].items() if not k.startswith("text_encoder.")}
    torch.manual_seed(1)
    encoder = build_module(text_encoder)
    state.update({f"text_encoder.{k}": v for k, v in encoder.state_dict().items()})
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in state.items() if k.startswith("dit.")}
    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": state,
            "ema_state_dict": ema,
            "hyper_parameters": hp,
            "global_step": 1234,
            "epoch": 3,
            "pytorch-lightning_version": "2.6.6",
            "LatentDataModule": DATA_STATE,
        },
        path,
    )
    (run_dir / "config.yaml").write_text(
        "task: dit_tiny\nseed: 0\ndata:\n  _target_: data_pipelines.latents.LatentDataModule\n"
        "  train_urls: /data/world/latents/shard-*.tar\n  batch_size: 8\n"
    )
    return path


@pytest.fixture(scope="module")
def hf_encoder_factory(tmp_path_factory):
    """Writes a tiny random T5 encoder + a word-level tokenizer (no download) to a folder, with a licence."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = ["[PAD]", "[UNK]", "</s>", "a", "red", "ball", "falls", "blue", "box", "slides"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>"
    )

    def make(seed: int) -> Path:
        torch.manual_seed(seed)
        config = T5Config(
            vocab_size=len(words), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0
        )
        folder = tmp_path_factory.mktemp(f"t5_{seed}")
        T5EncoderModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny t5\n")
        (folder / "LICENSE").write_text("Apache License\nVersion 2.0, January 2004\n")
        return folder

    return make


def _hf_config(path: Path) -> dict:
    return {"_target_": "sora.models.text.HFTextEncoder", "path": str(path), "dim": 16, "dtype": "float32"}


def test_export_travels_and_samples_bitwise_word_encoder(tiny_av_checkpoint, tmp_path):
    run = tmp_path / "run"
    ckpt = write_checkpoint(run, tiny_av_checkpoint, WORD)
    expected = AVPipeline.from_pretrained(ckpt).generate(GenerationRequest(**REQUEST))
    folder = export(ckpt, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "audio_vae.safetensors",
        "config.json",
        "dit.safetensors",
        "text_encoder.safetensors",
        "video_vae.safetensors",
    ]
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "model")
    shutil.rmtree(folder)
    shutil.rmtree(run)
    got = sample_in_fresh_process(moved, tmp_path)
    assert np.array_equal(got["video"], expected.video) and np.array_equal(got["audio"], expected.audio)


def test_export_bundles_a_frozen_hf_encoder_and_travels_bitwise(
    tiny_av_checkpoint, hf_encoder_factory, tmp_path
):
    source = hf_encoder_factory(0)
    run = tmp_path / "run"
    ckpt = write_checkpoint(run, tiny_av_checkpoint, _hf_config(source))
    expected = AVPipeline.from_pretrained(ckpt).generate(GenerationRequest(**REQUEST))
    folder = export(ckpt, tmp_path / "export")
    names = {p.name for p in folder.iterdir()}
    assert "text_encoder" in names and "text_encoder.safetensors" not in names  # no 72-byte empty file
    bundled = {p.name for p in (folder / "text_encoder").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "LICENSE"} <= bundled
    manifest = json.loads((folder / "config.json").read_text())
    assert manifest["networks"]["text_encoder"]["path"] == "text_encoder"  # relative, not the training path
    assert str(tmp_path) not in json.dumps(manifest["networks"])
    assert manifest["text_encoder_source"]["mode"] == "bundled"
    assert "transformers" in manifest["versions"]
    assert "Licence: apache-2.0" in (folder / "README.md").read_text()

    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "model")
    for gone in (folder, run, source):
        shutil.rmtree(gone)
    got = sample_in_fresh_process(moved, tmp_path)
    assert np.array_equal(got["video"], expected.video) and np.array_equal(got["audio"], expected.audio)


def test_referenced_hf_encoder_says_what_to_provide_and_is_verified(
    tiny_av_checkpoint, hf_encoder_factory, tmp_path
):
    source = hf_encoder_factory(0)
    ckpt = write_checkpoint(tmp_path / "run", tiny_av_checkpoint, _hf_config(source))
    expected = AVPipeline.from_pretrained(ckpt).generate(GenerationRequest(**REQUEST))
    folder = export(
        ckpt,
        tmp_path / "export",
        text_encoder="reference",
        text_encoder_repo="acme/tiny-t5",
        text_encoder_revision="0123abc",
    )
    assert not (folder / "text_encoder").exists()
    te = json.loads((folder / "config.json").read_text())["text_encoder_source"]
    assert (te["mode"], te["repo_id"], te["revision"]) == ("reference", "acme/tiny-t5", "0123abc")
    assert "`acme/tiny-t5` (revision `0123abc`" in (folder / "README.md").read_text()

    downloaded = shutil.move(source, tmp_path / "downloaded")  # the training machine's folder is gone
    with pytest.raises(
        FileNotFoundError,
        match=r"acme/tiny-t5 at revision 0123abc .*huggingface-cli download acme/tiny-t5 --revision 0123abc"
        r".*text_encoder_path=DIR",
    ):
        AVPipeline.from_pretrained(folder)
    pipe = AVPipeline.from_pretrained(folder, text_encoder_path=downloaded)
    clip = pipe.generate(GenerationRequest(**REQUEST))
    assert np.array_equal(clip.video, expected.video)
    with pytest.raises(ValueError, match="is not the one this export was trained with"):
        AVPipeline.from_pretrained(folder, text_encoder_path=hf_encoder_factory(1))


def test_cli_export_records_card_versions_eval_and_dtype(tiny_av_checkpoint, tmp_path):
    ckpt = write_checkpoint(tmp_path / "run", tiny_av_checkpoint, WORD)
    ref = AVPipeline.from_pretrained(ckpt)
    results = tmp_path / "results.json"
    row = {"left_right_accuracy": 0.51, "left_right_accuracy_lo": 0.4, "left_right_accuracy_hi": 0.62}
    results.write_text(
        json.dumps(
            {
                "suite": "world",
                "num_scenes": 60,
                "model_config_hash": ref.config_hash,
                "summary_numbers": ["left_right_accuracy", "sync_f1"],
                "summary": {"t2av": {**row, "left_right_accuracy_n": 60, "sync_f1": 0.3}},
            }
        )
    )
    out = tmp_path / "export"
    args = [f"checkpoint={ckpt}", f"out_dir={out}", "dtype=bf16", f"results={results}"]
    subprocess.run([sys.executable, "-m", "sora.export", *args], cwd=tmp_path, env=_env(), check=True)
    assert not (out / "export.log").exists()
    assert {p.name for p in out.iterdir()} == {
        "README.md",
        "config.json",
        *(f"{n}.safetensors" for n in ("dit", "text_encoder", "video_vae", "audio_vae")),
    }
    manifest = json.loads((out / "config.json").read_text())
    assert (
        manifest["versions"]["torch"] == torch.__version__
        and manifest["model_config_hash"] == ref.config_hash
    )
    assert manifest["dtypes"] == {
        "dit": "bfloat16",
        "text_encoder": "bfloat16",
        "video_vae": "float32",
        "audio_vae": "float32",
    }
    assert manifest["training"]["global_step"] == 1234
    assert manifest["training"]["data"]["samples_consumed"] == 4936
    assert manifest["training"]["run"]["train_urls"] == "/data/world/latents/shard-*.tar"
    card = (out / "README.md").read_text()
    for line in (
        "| t2av | 0.51 [0.4, 0.62] (n=60) | 0.3 |",
        "- steps: 1234, epoch: 3",
        "samples consumed: 4936 (data epoch 3, world size 2); skipped: {'decode': 3}; filtered: 1",
        "from `/data/world/latents/shard-*.tar`",
        f"Model config hash: `{ref.config_hash}`",
        f"(torch {torch.__version__})",
    ):
        assert line in card

    from sora.checkpoint import read_safetensors_header

    specs, _ = read_safetensors_header(out / "dit.safetensors")
    assert {s.dtype for s in specs.values()} == {torch.bfloat16}
    pipe = AVPipeline.from_pretrained(out)
    assert next(pipe.dit.parameters()).dtype == torch.bfloat16
    assert next(pipe.video_vae.parameters()).dtype == torch.float32
    assert pipe.generate(GenerationRequest(**REQUEST)).video.shape == (9, 32, 32, 3)
    cast = AVPipeline.from_pretrained(ckpt, dtype="bf16")
    assert next(cast.dit.parameters()).dtype == torch.bfloat16
    assert torch.equal(next(cast.dit.parameters()), next(pipe.dit.parameters()))


def test_sharded_checkpoint_consolidates_into_one_export(tiny_av_checkpoint, tmp_path):
    from sora.checkpoint_sharded import save_sharded_checkpoint

    ckpt = write_checkpoint(tmp_path / "run", tiny_av_checkpoint, WORD)
    full = torch.load(ckpt, weights_only=True)
    sharded = save_sharded_checkpoint(
        full.pop("state_dict"), tmp_path / "run" / "checkpoints" / "last-sharded.ckpt", extra=full
    )
    expected = AVPipeline.from_pretrained(ckpt).generate(GenerationRequest(**REQUEST))
    folder = export(sharded, tmp_path / "export")
    clip = AVPipeline.from_pretrained(folder).generate(GenerationRequest(**REQUEST))
    assert np.array_equal(clip.video, expected.video) and np.array_equal(clip.audio, expected.audio)
    assert json.loads((folder / "config.json").read_text())["training"]["global_step"] == 1234


@pytest.fixture(scope="module")
def exported(tiny_av_checkpoint, tmp_path_factory):
    return export(tiny_av_checkpoint, tmp_path_factory.mktemp("export") / "model")


def _copy(folder: Path, tmp_path: Path) -> Path:
    return shutil.copytree(folder, tmp_path / "model")


def test_export_config_sizes_are_bounded_before_allocating(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    manifest = json.loads((folder / "config.json").read_text())
    manifest["networks"]["dit"]["depth"] = 100_000
    (folder / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"config.json: networks.dit: depth=100000 is out of bounds"):
        AVPipeline.from_pretrained(folder)
    manifest["networks"]["dit"]["depth"] = 2
    manifest["sampling"]["max_size"] = 10**9
    (folder / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"sampling: max_size=1000000000 is out of bounds"):
        AVPipeline.from_pretrained(folder)


def test_export_weights_are_checked_against_the_config(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    manifest = json.loads((folder / "config.json").read_text())
    manifest["networks"]["dit"]["hidden_size"] = 48
    manifest["networks"]["dit"]["num_heads"] = 3
    (folder / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=r"dit.safetensors: tensor '[\w.]+' has shape \[\d+(, \d+)*\], the config"
    ):
        AVPipeline.from_pretrained(folder)


def test_truncated_export_file_is_a_clear_error(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    data = (folder / "video_vae.safetensors").read_bytes()
    (folder / "video_vae.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"video_vae.safetensors is truncated: its header describes \d+ bytes"
    ):
        AVPipeline.from_pretrained(folder)


def test_unknown_export_format_and_networks_are_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    manifest = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**manifest, "format": "sora-export-v9"}))
    with pytest.raises(ValueError, match="unknown export format 'sora-export-v9'"):
        AVPipeline.from_pretrained(folder)
    manifest["networks"]["shell"] = {"_target_": "os.system"}
    (folder / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="unknown network 'shell'"):
        AVPipeline.from_pretrained(folder)


@pytest.mark.slow
def test_a_real_training_run_exports_and_travels_bitwise(latent_shards, tmp_path):
    """The same journey from a checkpoint Lightning wrote (one DiT step on the latent cache, EMA on)."""
    import train
    from sora.config import compose

    run = tmp_path / "run"
    cfg = compose(
        "train",
        [
            "experiment=dit_tiny",
            "trainer=cpu",
            "trainer.max_steps=1",
            "logger=csv",
            f"out_dir={run}",
            "callbacks.samples=null",
            "module.compile=false",
            f"data.train_urls={latent_shards}/shard-*.tar",
            "data.batch_size=2",
            "data.max_tokens=null",
            "data.num_workers=0",
            "data.resampled=false",
            "data.epoch_samples=null",
        ],
    )
    ckpt = Path(train.run(cfg)["checkpoint"])
    expected = AVPipeline.from_pretrained(ckpt).generate(GenerationRequest(**REQUEST))
    folder = export(ckpt, tmp_path / "export")
    manifest = json.loads((folder / "config.json").read_text())
    assert manifest["training"]["global_step"] == 1
    assert manifest["training"]["data"]["samples_consumed"] >= 2
    assert manifest["training"]["run"]["train_urls"] == f"{latent_shards}/shard-*.tar"
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "model")
    shutil.rmtree(folder)
    shutil.rmtree(run)
    got = sample_in_fresh_process(moved, tmp_path)
    assert np.array_equal(got["video"], expected.video) and np.array_equal(got["audio"], expected.audio)


def test_reference_to_a_hub_cached_encoder_is_found_in_the_cache(
    tiny_av_checkpoint, hf_encoder_factory, tmp_path, monkeypatch
):
    """A referenced encoder trained from the hub cache: repo id and revision are read from the cache path,
    and on another machine the same revision is found in that machine's cache (no network)."""
    import huggingface_hub

    rev = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--acme--tiny-t5" / "snapshots" / rev
    shutil.copytree(hf_encoder_factory(0), snapshot)
    ckpt = write_checkpoint(tmp_path / "run", tiny_av_checkpoint, _hf_config(snapshot))
    expected = AVPipeline.from_pretrained(ckpt).generate(GenerationRequest(**REQUEST))
    folder = export(ckpt, tmp_path / "export", text_encoder="reference")
    te = json.loads((folder / "config.json").read_text())["text_encoder_source"]
    assert (te["repo_id"], te["revision"]) == ("acme/tiny-t5", rev)
    cache = shutil.move(tmp_path / "hub", tmp_path / "other_machine_hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    clip = AVPipeline.from_pretrained(folder).generate(GenerationRequest(**REQUEST))
    assert np.array_equal(clip.video, expected.video)


def test_bundled_hf_config_sizes_are_bounded(tiny_av_checkpoint, hf_encoder_factory, tmp_path):
    ckpt = write_checkpoint(tmp_path / "run", tiny_av_checkpoint, _hf_config(hf_encoder_factory(0)))
    folder = export(ckpt, tmp_path / "export")
    hf_config = folder / "text_encoder" / "config.json"
    cfg = json.loads(hf_config.read_text())
    hf_config.write_text(json.dumps({**cfg, "num_layers": 100_000}))
    with pytest.raises(ValueError, match=r"text_encoder/config.json: num_layers=100000 is out of bounds"):
        AVPipeline.from_pretrained(folder)
    hf_config.write_text(json.dumps(cfg))
    (folder / "text_encoder" / "model.safetensors").rename(folder / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"no safetensors weights \(pytorch_model.bin\); pickled weights"):
        AVPipeline.from_pretrained(folder)


@pytest.mark.gpu
def test_from_pretrained_loads_straight_to_cuda_in_bf16(exported):
    pipe = AVPipeline.from_pretrained(exported, dtype="bf16", device="cuda")
    dit = next(pipe.dit.parameters())
    assert dit.is_cuda and dit.dtype == torch.bfloat16
    assert all(t.is_cuda for t in pipe.video_vae.state_dict().values())
    assert pipe.generate(GenerationRequest(**REQUEST)).video.shape == (9, 32, 32, 3)
