"""data_pipelines.latents: latent shards from stand-in VAEs, resumable atomic writes, LatentDataModule."""

import io
import json
import logging
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from data_pipelines.dataset import BucketSpec, decode_av_sample
from data_pipelines.latents import LatentDataModule, encode_shards, load_vae, load_vae_for, run
from data_pipelines.shard_writer import write_shard
from sora import media
from sora.checkpoint import build_module
from sora.config import compose
from sora.models.distributions import DiagonalGaussian
from sora.models.text import ByteTextEncoder
from sora.models.video_vae import CausalVideoVAE

SR = 16000


class TinyVideoVAE(nn.Module):
    """CausalVideoVAE stand-in: (B, 3, 1 + 4k, H, W) -> posterior (B, 4, 1 + k, H / 8, W / 8)."""

    temporal_compression, spatial_compression, latent_channels = 4, 8, 4

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.proj = nn.Conv3d(3, 2 * self.latent_channels, kernel_size=(1, 8, 8), stride=(1, 8, 8))
        self.register_buffer("latent_std", torch.full((self.latent_channels,), 2.0))
        self.calls, self.fail_after = 0, fail_after

    def encode(self, video: torch.Tensor) -> DiagonalGaussian:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        b, c, t, h, w = video.shape
        assert (t - 1) % 4 == 0, t
        pooled = torch.cat([video[:, :, :1], video[:, :, 1:].reshape(b, c, (t - 1) // 4, 4, h, w).mean(3)], 2)
        return DiagonalGaussian.from_moments(
            self.proj(pooled)
        )  # (B, 8, 1 + k, h, w) -> mean/logvar (B, 4, ...)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.latent_std.view(1, -1, 1, 1, 1)


class TinyAudioVAE(nn.Module):
    """AudioVAE stand-in: (B, 1, S) at 16 kHz -> posterior (B, 8, S // 640), 25 frames/s."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv1d(1, 16, kernel_size=640, stride=640)

    def encode(self, audio: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian.from_moments(self.proj(audio))

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z


class FrozenText(nn.Module):
    """Stand-in TextEncoder: one 4-d embedding per UTF-8 byte (plus BOS); frozen."""

    dim, trainable = 4, False

    def fingerprint(self) -> str:
        return "bytes-4"

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [[1] + list(c.encode()) for c in captions]
        n = max(map(len, rows))
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids[..., None].float().expand(-1, -1, self.dim) / 255.0, ids != 0


def _clip(num_frames: int, audio: bool = True) -> dict:
    video = np.zeros((num_frames, 64, 64, 3), np.uint8)
    for i in range(num_frames):
        video[i, :, 2 * i : 2 * i + 6] = (200, 50, 20)
    sound = (
        (0.3 * np.sin(np.arange(int(num_frames / 24 * SR)) / 7.0))[None].astype(np.float32) if audio else None
    )
    meta = {"fps": 24.0, "num_frames": num_frames, "width": 64, "height": 64, "source": "test"}
    return {
        "mp4": media.encode_mp4(video, 24.0, sound, SR),
        "json": json.dumps(meta).encode(),
        "txt": b"a bar",
    }


def _write(path: Path, samples: list[tuple[str, dict]]) -> str:
    return str(write_shard(path, samples))


# Tiny project networks (the latent cache builds only networks on sora.checkpoint.ALLOWED_TARGETS)
VIDEO_CFG = {
    "_target_": "sora.models.video_vae.CausalVideoVAE",
    "latent_channels": 4,
    "base_channels": 4,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "patch_size": 2,
}
AUDIO_CFG = {
    "_target_": "sora.models.audio_vae.AudioVAE",
    "latent_channels": 4,
    "base_channels": 8,
    "channel_mult": [1, 1, 1],
    "num_res_blocks": 1,
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("shards")
    a = [
        ("long0", _clip(48)),
        ("short0", _clip(12)),
        ("bad", {"mp4": b"junk", "txt": b"x"}),
        ("long1", _clip(48)),
    ]
    b = [("mute", _clip(48, audio=False)), ("short1", _clip(12))]
    return [_write(d / "in-000.tar", a), _write(d / "in-001.tar", b)]


BUCKETS = {"64px": [17, 9]}


def _read(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_encode_round_trip_and_resume(shards, tmp_path):
    torch.manual_seed(0)
    vae, audio_vae = TinyVideoVAE(), TinyAudioVAE()
    report = encode_shards(
        vae, audio_vae, shards, tmp_path, buckets=BUCKETS, batch_size=2, num_workers=2, normalize=True
    )
    assert (
        report["shards_written"] == 2
        and report["samples_written"] == 5
        and report["skipped"] == {"decode_error": 1}
    )
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    first = _read(tmp_path / "shard-000000.tar")
    assert sorted(first) == ["long0", "long1", "short0"]
    lat = np.load(io.BytesIO(first["long0"]["video_latent.npy"]))
    assert lat.shape == (4, 5, 8, 8) and np.load(io.BytesIO(first["short0"]["video_latent.npy"])).shape == (
        4,
        3,
        8,
        8,
    )
    assert np.load(io.BytesIO(first["long0"]["audio_latent.npy"])).shape == (8, round(17 / 24 * SR) // 640)
    meta = json.loads(first["long0"]["json"])
    assert meta["source"] == "test" and meta["source_key"] == "long0" and first["long0"]["txt"] == b"a bar"
    assert meta["latent"]["mode"] == "mean" and meta["latent"]["normalized"] and meta["latent"]["has_audio"]
    assert "text_emb.npy" not in first["long0"]  # no frozen text encoder: captions only
    # the stored latent is the normalised posterior mean of the validation window
    spec = BucketSpec({"64px": {17: [1.0, 1], 9: [1.0, 1]}})
    sample = {**_clip(48), "__key__": "long0"}
    _, item = decode_av_sample(
        sample, spec, fps=24.0, sample_rate=SR, train=False, rng=np.random.default_rng(0)
    )
    with torch.no_grad():
        expected = vae.normalize_latents(vae.encode(item["video"][None]).mean)[0]
    np.testing.assert_allclose(lat, expected.numpy(), atol=1e-5)
    # rerun: nothing to do, nothing rewritten
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tar")}
    again = encode_shards(vae, audio_vae, shards, tmp_path, buckets=BUCKETS, batch_size=2)
    assert again["shards_skipped"] == 2 and again["shards_written"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tar")} == stamps


def test_crash_leaves_no_partial_shard_and_rerun_completes(shards, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_shards(
            TinyVideoVAE(fail_after=3), TinyAudioVAE(), shards, tmp_path, buckets=BUCKETS, batch_size=1
        )
    finals = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert finals == ["shard-000000.tar"] and len(_read(tmp_path / finals[0])) == 3  # complete, or absent
    report = encode_shards(TinyVideoVAE(), TinyAudioVAE(), shards, tmp_path, buckets=BUCKETS, batch_size=1)
    assert report["shards_skipped"] == 1 and report["shards_written"] == 1
    assert sorted(_read(tmp_path / "shard-000001.tar")) == ["mute", "short1"]


def test_mirror_writes_each_clips_flipped_twin_with_its_sides_swapped(tmp_path):
    clip = {**_clip(48), "txt": b"A bar on the left moves rightwards."}
    clip["json"] = json.dumps(
        {**json.loads(clip["json"]), "start": [{"id": 0, "horizontal": "left"}]}
    ).encode()
    shard = _write(tmp_path / "in-000.tar", [("bar", clip)])
    vae, audio_vae = TinyVideoVAE(), TinyAudioVAE()
    report = encode_shards(
        vae, audio_vae, [shard], tmp_path / "out", buckets=BUCKETS, batch_size=2, mirror=True
    )
    assert report["samples_written"] == 2 and report["mirrored"]
    out = _read(tmp_path / "out" / "shard-000000.tar")
    assert sorted(out) == ["bar", "bar_mirror"]
    src, twin = out["bar"], out["bar_mirror"]
    assert src["txt"] == b"A bar on the left moves rightwards."
    assert twin["txt"] == b"A bar on the right moves leftwards."
    meta, twin_meta = json.loads(src["json"]), json.loads(twin["json"])
    assert "mirrored" not in meta and twin_meta["mirrored"] is True
    assert twin_meta["start"] == [{"id": 0, "horizontal": "right"}] and twin_meta["source_key"] == "bar"
    assert twin_meta["latent"] == meta["latent"]
    # the twin's latent is the VAE's latent of the flipped clip (not the source's latent flipped)
    spec = BucketSpec({"64px": {17: [1.0, 1], 9: [1.0, 1]}})
    _, item = decode_av_sample(
        {**clip, "__key__": "bar"}, spec, fps=24.0, sample_rate=SR, train=False, rng=np.random.default_rng(0)
    )
    with torch.no_grad():
        flipped = vae.encode(item["video"][None].flip(-1)).mean[0]
        source = vae.encode(item["video"][None]).mean[0]
    np.testing.assert_allclose(np.load(io.BytesIO(twin["video_latent.npy"])), flipped.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.load(io.BytesIO(src["video_latent.npy"])), source.numpy(), atol=1e-5)
    assert not np.allclose(flipped.numpy(), source.numpy(), atol=1e-3)  # the clip is not symmetric
    assert twin["audio_latent.npy"] == src["audio_latent.npy"]  # mono sound: the same
    with pytest.raises(ValueError, match="mirror"):
        encode_shards(
            vae, audio_vae, [shard], tmp_path / "o2", buckets=BUCKETS, text_encoder=FrozenText(), mirror=True
        )


def test_latent_datamodule_groups_shapes_and_text_embeddings(shards, tmp_path):
    encode_shards(
        TinyVideoVAE(),
        TinyAudioVAE(),
        shards,
        tmp_path,
        text_encoder=FrozenText(),
        buckets=BUCKETS,
        batch_size=4,
        rank=0,
        world_size=1,
    )
    dm = LatentDataModule(
        str(tmp_path / "shard-{000000..000001}.tar"),
        batch_size=2,
        num_workers=0,
        drop_partial=False,
        shuffle_buffer=0,
    )
    seen = []
    for batch in dm.train_dataloader():
        b, c, t, h, w = batch["video_latent"].shape
        assert (c, h, w) == (4, 8, 8) and t in (5, 3)
        assert batch["audio_latent"].shape == (b, 8, round((4 * t - 3) / 24 * SR) // 640)
        assert batch["text_emb"].shape[:2] == batch["text_mask"].shape and batch["text_mask"][:, 0].all()
        assert batch["fps"].tolist() == [24.0] * b and batch["caption"] == ["a bar"] * b
        assert {m["latent"]["text_encoder"] for m in batch["meta"]} == {"bytes-4"}  # which encoder made them
        seen += [(m["key"], t, bool(a)) for m, a in zip(batch["meta"], batch["has_audio"])]
    assert sorted(seen) == [
        ("long0", 5, True),
        ("long1", 5, True),
        ("mute", 5, False),
        ("short0", 3, True),
        ("short1", 3, True),
    ]


def test_load_vae_from_safetensors_and_lightning_ckpt(tmp_path):
    torch.manual_seed(0)
    src = build_module(VIDEO_CFG)
    save_file(src.state_dict(), tmp_path / "vae.safetensors")
    torch.save(
        {"state_dict": {**{f"vae.{k}": v for k, v in src.state_dict().items()}, "dit.w": torch.zeros(1)}},
        tmp_path / "module.ckpt",
    )
    for weights in ("vae.safetensors", "module.ckpt"):
        vae = load_vae(VIDEO_CFG, str(tmp_path / weights))
        assert (
            all(torch.equal(v, src.state_dict()[k]) for k, v in vae.state_dict().items()) and not vae.training
        )
    both = {
        **{f"vae.{k}": v for k, v in src.state_dict().items()},
        **{f"ema.vae.{k}": v * 0 for k, v in src.state_dict().items()},
    }
    torch.save({"state_dict": both}, tmp_path / "ema.ckpt")
    with pytest.raises(ValueError, match="key_prefix"):
        load_vae(VIDEO_CFG, str(tmp_path / "ema.ckpt"))
    ema = load_vae(VIDEO_CFG, str(tmp_path / "ema.ckpt"), key_prefix="ema.vae.")
    assert all(p.abs().sum() == 0 for p in ema.parameters())
    with pytest.raises(ValueError, match="no weights"):
        load_vae(VIDEO_CFG, None)


@pytest.mark.parametrize("target", ["os.system", "sora.something_else", "sora.checkpoint.save_safetensors"])
def test_latent_cache_builds_only_the_projects_networks(tmp_path, target):
    # before: any `_target_` starting with "sora." was instantiated; save_safetensors would write a file
    written = tmp_path / "written.safetensors"
    cfg = {"_target_": target, "module_or_state": {}, "path": str(written)}
    with pytest.raises(ValueError, match="refusing to build"):
        load_vae(cfg, None, allow_random_init=True)
    # the same through a VAE training checkpoint naming it, and through the CLI's bare-weights path
    torch.save({"hyper_parameters": {"vae": cfg}, "state_dict": {}}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="refusing to build"):
        load_vae_for("video", str(tmp_path / "evil.ckpt"), None)
    save_file({"w": torch.zeros(1)}, tmp_path / "w.safetensors")
    overrides = [
        f"shards={tmp_path}/none.tar",
        f"out_dir={tmp_path / 'out'}",
        f"vae.video={tmp_path}/w.safetensors",
        f"vae.video_model._target_={target}",
        "+vae.video_model.module_or_state={}",
        f"+vae.video_model.path={written}",
        "device=cpu",
    ]
    with pytest.raises(ValueError, match="refusing to build"):
        run(compose("latents", overrides))
    assert not written.exists()


def test_cli_run_with_hydra_config(shards, tmp_path):
    torch.manual_seed(0)
    save_file(build_module(VIDEO_CFG).state_dict(), tmp_path / "v.safetensors")
    save_file(build_module(AUDIO_CFG).state_dict(), tmp_path / "a.safetensors")
    video_model = "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in VIDEO_CFG.items()) + "}"
    audio_model = "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in AUDIO_CFG.items()) + "}"
    cfg = compose(
        "latents",
        [
            f"shards=[{shards[0]},{shards[1]}]",
            f"out_dir={tmp_path / 'out'}",
            f"vae.video={tmp_path / 'v.safetensors'}",
            f"vae.audio={tmp_path / 'a.safetensors'}",
            f"++vae.video_model={video_model}",
            f"++vae.audio_model={audio_model}",
            "num_workers=0",
            "device=cpu",
            "dtype=float16",
            "mode=sample",
        ],
    )
    report = run(cfg)
    assert report["samples_written"] == 5 and (tmp_path / "out" / "latents_config.yaml").exists()
    mute = _read(tmp_path / "out" / "shard-000001.tar")["mute"]
    lat = np.load(io.BytesIO(mute["video_latent.npy"]))
    assert lat.dtype == np.float16 and lat.shape == (4, 12, 8, 8)  # default buckets: 45 frames = 1 + 4 * 11
    latent = json.loads(mute["json"])["latent"]
    assert (
        latent["mode"] == "sample" and not latent["normalized"] and not latent["has_audio"]
    )  # raw by default
    with pytest.raises(ValueError, match="allowed_targets is gone"):  # a prefix allowlist is not honoured
        run(
            compose("latents", [f"shards={shards[0]}", f"out_dir={tmp_path}", "+vae.allowed_targets=[sora.]"])
        )


def test_real_video_vae(shards, tmp_path):
    vae = CausalVideoVAE(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1, 1), num_res_blocks=1)
    text = ByteTextEncoder(dim=32, depth=1)  # trainable: not stored
    report = encode_shards(
        vae, TinyAudioVAE(), shards[1], tmp_path, text_encoder=text, buckets=BUCKETS, batch_size=2
    )
    assert report["samples_written"] == 2 and not report["text_embeddings"]
    shapes = {
        k: np.load(io.BytesIO(v["video_latent.npy"])).shape
        for k, v in _read(tmp_path / "shard-000000.tar").items()
    }
    assert shapes == {"mute": (4, 5, 8, 8), "short1": (4, 3, 8, 8)}


def _vae_checkpoint(path: Path, module: nn.Module, ema_shift: float = 0.0) -> Path:
    """What a VAE training run (sora.training.vae_module) writes: hparams, state_dict, EMA weights."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    ema = {
        k: v + ema_shift if k.startswith("vae.") and "latent_std" not in k else v
        for k, v in state.items()
        if k.startswith("vae.")
    }
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": state, "ema_state_dict": ema}, path)
    return path


def test_cli_loads_vae_training_checkpoints(shards, tmp_path):
    from sora.training.vae_module import AudioVAEModule, VideoVAEModule

    # Constructor arguments live only in the checkpoints: the CLI's default video_model / audio_model
    # (full-size networks) would not even accept these weights.
    torch.manual_seed(0)
    video, audio = VideoVAEModule(vae=VIDEO_CFG), AudioVAEModule(vae=AUDIO_CFG)
    video.vae.set_latent_stats(torch.arange(4.0), torch.full((4,), 2.0))
    v_ckpt = _vae_checkpoint(tmp_path / "video.ckpt", video, ema_shift=0.01)
    a_ckpt = _vae_checkpoint(tmp_path / "audio.ckpt", audio)
    cfg = compose(
        "latents",
        [
            f"shards={shards[1]}",
            f"out_dir={tmp_path / 'out'}",
            f"vae.video={v_ckpt}",
            f"vae.audio={a_ckpt}",
            "num_workers=0",
            "device=cpu",
            "normalize=true",
            "buckets={64px: [17, 9]}",
        ],
    )
    report = run(cfg)
    assert report["samples_written"] == 2
    sample = _read(tmp_path / "out" / "shard-000000.tar")["short1"]
    lat = np.load(io.BytesIO(sample["video_latent.npy"]))
    assert lat.shape == (4, 3, 8, 8) and np.load(io.BytesIO(sample["audio_latent.npy"])).shape[0] == 4
    # the EMA weights and the checkpoint's latent statistics were used
    ema_vae = VideoVAEModule(vae=VIDEO_CFG).vae
    ema_vae.load_state_dict(
        {k[4:]: v for k, v in torch.load(v_ckpt, weights_only=True)["ema_state_dict"].items()}
    )
    spec = BucketSpec({"64px": {17: [1.0, 1], 9: [1.0, 1]}})
    _, item = decode_av_sample(
        {**_clip(12), "__key__": "short1"},
        spec,
        fps=24.0,
        sample_rate=SR,
        train=False,
        rng=np.random.default_rng(0),
    )
    with torch.no_grad():
        expected = ema_vae.normalize_latents(ema_vae.encode(item["video"][None]).mean)[0]
    np.testing.assert_allclose(lat, expected.numpy(), atol=1e-4)
    # a checkpoint of the wrong kind is named
    bad = compose("latents", [f"shards={shards[1]}", f"out_dir={tmp_path / 'bad'}", f"vae.video={a_ckpt}"])
    with pytest.raises(ValueError, match="not a video VAE"):
        run(bad)


def test_encoding_twice_gives_the_same_bytes(shards, tmp_path):
    # before: every member carried the current time, so no two runs wrote the same shard
    torch.manual_seed(0)
    vae, audio_vae = TinyVideoVAE(), TinyAudioVAE()
    kw = {"buckets": BUCKETS, "batch_size": 2, "mode": "sample", "seed": 3}
    encode_shards(vae, audio_vae, shards, tmp_path / "a", num_workers=2, **kw)
    time.sleep(1.1)  # a timestamp in the tar would now differ by a second
    encode_shards(vae, audio_vae, shards, tmp_path / "b", num_workers=0, **kw)
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_damaged_input_shard_is_read_past_and_its_losses_reported(tmp_path, caplog):
    # before: a corrupt tar header silently ended the shard: 6 of 17 samples lost, nothing counted
    clip = _clip(12)
    path = Path(_write(tmp_path / "in.tar", [(f"c{i:02d}", clip) for i in range(17)]))
    with tarfile.open(path) as tar:
        offset = next(m.offset for m in tar.getmembers() if m.name == "c11.json")
    data = bytearray(path.read_bytes())
    data[offset + 100 : offset + 108] = b"garbage!"  # the header checksum no longer matches
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        report = encode_shards(TinyVideoVAE(), TinyAudioVAE(), str(path), tmp_path / "out", buckets=BUCKETS)
    assert report["samples_written"] == 16 and report["skipped"] == {"corrupt_tar": 1}
    assert [(x["reason"], x["where"]) for x in report["losses"]] == [("corrupt_tar", f"{path}:c11")]
    on_disk = json.loads((tmp_path / "out" / "latents_report.json").read_text())
    assert on_disk["skipped"] == {"corrupt_tar": 1} and on_disk["losses"] == report["losses"]
    assert sorted(_read(tmp_path / "out" / "shard-000000.tar")) == [f"c{i:02d}" for i in range(17) if i != 11]
    assert any("could not be encoded" in r.getMessage() for r in caplog.records)
