"""caption_keys: caption forms mixed per sample (pixel and latent shards), fallback counted, exact resume,
validation; and caption dropout for classifier-free guidance in both DiT step kinds.

The shards are built here with json ``captions`` dicts (tiny PNG images: fast to decode), so nothing depends
on which forms the synthetic world writes.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from data_pipelines import shard_writer
from data_pipelines.caption_forms import CaptionMix
from data_pipelines.data_stats import DataStatsCallback
from data_pipelines.dataset import VideoDataModule
from data_pipelines.latents import LatentDataModule, encode_shards
from data_pipelines.sample_errors import StreamConfigError
from sora.config import CONF_DIR, compose
from sora.models.distributions import DiagonalGaussian
from sora.training.dit_module import AVDiTModule

BUCKETS = {"32px": {1: [1.0, 4]}}


def _within(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """``count`` successes of ``n`` draws is within ``sigmas`` binomial standard deviations of ``n * p``."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def _texts(i: int) -> dict:
    """The caption forms of sample ``i``: every 4th has no json captions at all, every 7th (else) lacks
    ``short``, sample 1 has an empty ``short``; the rest have dense / short / structured."""
    texts = {"txt": f"a dense caption of scene {i} with a red ball on the left"}
    if i % 4 == 3:
        return texts
    forms = {"dense": texts["txt"], "structured": f"objects: ball {i}"}
    if i % 7 != 6:
        forms["short"] = "" if i == 1 else f"ball {i} falls"
    return {**texts, "captions": forms}


def _has_short(i: int) -> bool:
    return bool(_texts(i).get("captions", {}).get("short"))


def _image_sample(i: int, size: tuple[int, int]) -> dict:
    """A PNG (noise, so random crops differ) with json width/height (+ captions) and txt."""
    h, w = size
    pixels = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    texts = _texts(i)
    meta = {"width": w, "height": h, **({"captions": texts["captions"]} if "captions" in texts else {})}
    return {"png": buf.getvalue(), "json": json.dumps(meta).encode(), "txt": texts["txt"].encode()}


def _pixel_shards(root: Path, n: int = 240, per_shard: int = 60, sizes=((32, 32), (24, 48))) -> list[str]:
    """``n`` images over shards; alternating sizes make two aspect buckets (some wait at a checkpoint) and
    the 24 x 48 ones are cropped at random in training."""
    return [
        str(
            shard_writer.write_shard(
                root / f"img-{s:02d}.tar",
                [
                    (f"s{i:04d}", _image_sample(i, sizes[i % len(sizes)]))
                    for i in range(s * per_shard, min(n, (s + 1) * per_shard))
                ],
            )
        )
        for s in range(math.ceil(n / per_shard))
    ]


@pytest.fixture(scope="module")
def pixel_urls(tmp_path_factory) -> list[str]:
    return _pixel_shards(tmp_path_factory.mktemp("caption_pixels"))


def _pixel_dm(urls, caption_keys=None, **kw) -> VideoDataModule:
    kw = {"num_workers": 0, "shuffle_buffer": 16, "seed": 3, "aspect_ratios": [1.0, 2.0], **kw}
    return VideoDataModule(urls, buckets=BUCKETS, caption_keys=caption_keys, **kw)


def _index(meta: dict) -> int:
    return int(meta["key"][1:])


def _samples(batches) -> list[tuple[int, str, dict]]:
    """(sample index, caption, meta) of every sample of ``batches``, in order."""
    return [(_index(m), c, m) for b in batches for c, m in zip(b["caption"], b["meta"], strict=True)]


# ---- the mix itself ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caption_keys, message",
    [
        ({}, "non-empty mapping"),
        (["txt", "short"], "non-empty mapping"),
        ({"txt": -0.5, "short": 1.5}, r"caption_keys.txt: .*finite number >= 0"),
        ({"txt": float("nan")}, r"caption_keys.txt: .*finite number >= 0"),
        ({"txt": float("inf"), "short": 1.0}, r"caption_keys.txt: .*finite number >= 0"),
        ({"txt": "half"}, r"caption_keys.txt: the probability must be a number"),
        ({"txt": True}, r"caption_keys.txt: .*finite number >= 0"),
        ({"txt": 0, "short": 0.0}, "sum to more than 0"),
        ({"": 1.0}, "non-empty string"),
    ],
)
def test_bad_caption_keys_are_clear_errors_in_both_datamodules(caption_keys, message):
    with pytest.raises(ValueError, match=message):
        CaptionMix(caption_keys)
    with pytest.raises(ValueError, match=message):
        VideoDataModule("x.tar", buckets=BUCKETS, caption_keys=caption_keys)
    with pytest.raises(ValueError, match=message):
        LatentDataModule("x.tar", caption_keys=caption_keys)


def test_probabilities_are_normalised_and_draws_follow_them():
    mix = CaptionMix({"txt": 1, "short": 1, "structured": 2, "never": 0})
    assert mix.probs == {"txt": 0.25, "short": 0.25, "structured": 0.5, "never": 0.0}
    assert CaptionMix.from_config(None) is None
    n = 6000
    draws = Counter(mix.draw(np.random.default_rng([5, i])) for i in range(n))
    assert set(draws) == {"txt", "short", "structured"}  # a zero-probability form is never drawn
    for form, p in mix.probs.items():
        if p > 0:
            assert _within(draws[form], n, p), (form, draws)


# ---- pixel shards ------------------------------------------------------------------------------------------


def test_default_is_the_txt_exactly(pixel_urls):
    """caption_keys null: the txt, no caption_form meta, no counts, and the very batches of a mix run except
    for the captions (the form is drawn after the window and crop)."""
    plain = list(_pixel_dm(pixel_urls).train_dataloader())
    dm = _pixel_dm(pixel_urls, {"txt": 1, "short": 1})
    mixed = list(dm.train_dataloader())
    for i, caption, meta in _samples(plain):
        assert caption == _texts(i)["txt"] and "caption_form" not in meta
    assert len(plain) == len(mixed) and len(plain) >= 50
    for a, b in zip(plain, mixed, strict=True):
        assert [m["key"] for m in a["meta"]] == [m["key"] for m in b["meta"]]
        assert torch.equal(a["video"], b["video"])  # same windows and random crops
    assert any(a["caption"] != b["caption"] for a, b in zip(plain, mixed, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_forms_are_mixed_with_their_probabilities_and_missing_ones_fall_back_counted(pixel_urls, workers):
    dm = _pixel_dm(pixel_urls, {"txt": 1, "short": 3}, num_workers=workers)  # short: 0.75 after normalising
    samples = _samples(dm.train_dataloader())
    assert len(samples) == 240
    drawn = Counter()
    for i, caption, meta in samples:
        texts = _texts(i)
        form = meta["caption_form"]
        drawn[meta.get("caption_form_missing", form)] += 1
        if form == "short":
            assert caption == texts["captions"]["short"] and _has_short(i)
            assert meta["caption_txt"] == texts["txt"]  # what it replaced: the DiT's text_align pairs them
        else:
            assert form == "txt" and caption == texts["txt"] and "caption_txt" not in meta
        if "caption_form_missing" in meta:  # drew short, the sample has none (or an empty one): its txt
            assert meta["caption_form_missing"] == "short" and not _has_short(i) and form == "txt"
    assert _within(drawn["short"], len(samples), 0.75), drawn
    missing = sum("caption_form_missing" in m for _, _, m in samples)
    lacking = sum(not _has_short(i) for i, _, _ in samples)
    assert 0 < missing < lacking  # some samples without short drew it, some drew txt anyway
    used = Counter(m["caption_form"] for _, _, m in samples)
    assert dm.progress.counts == Counter(
        {
            "caption_form/txt": used["txt"],
            "caption_form/short": used["short"],
            "caption_form_missing": missing,
            "caption_form_missing/short": missing,
        }
    )


def test_caption_draws_are_deterministic_and_change_between_epochs(pixel_urls):
    def forms(dm, epochs=1):
        loader = dm.train_dataloader()
        return [sorted((i, m["caption_form"]) for i, _, m in _samples(loader)) for _ in range(epochs)]

    keys = {"txt": 0.5, "structured": 0.5}
    first, second = forms(_pixel_dm(pixel_urls, keys), epochs=2)
    assert first == forms(_pixel_dm(pixel_urls, keys))[0]  # same seed: the same draws
    changed = sum(a != b for a, b in zip(first, second, strict=True))
    assert changed > 30  # a sample drawn again in the next epoch may get the other form
    other_seed = forms(_pixel_dm(pixel_urls, keys, seed=4))[0]
    assert other_seed != first


@pytest.mark.parametrize("workers, consumed", [(0, 9), (2, 8)])
def test_resume_continues_the_caption_draws_and_counts_exactly(pixel_urls, workers, consumed):
    keys = {"txt": 1, "short": 1, "structured": 1}

    def captions(batches):
        return [(i, c, m.get("caption_form_missing")) for i, c, m in _samples(batches)]

    full_dm = _pixel_dm(pixel_urls, keys, num_workers=workers)
    full = captions(full_dm.train_dataloader())
    dm = _pixel_dm(pixel_urls, keys, num_workers=workers)
    it = iter(dm.train_dataloader())
    head = captions(next(it) for _ in range(consumed))
    state = dm.state_dict()
    del it
    assert state["ranks"][0]["waiting"], (
        "a sample waits in a bucket at the checkpoint (else the test is moot)"
    )
    counts = Counter(state["ranks"][0]["counts"])  # those of the consumed samples, none of the waiting one
    assert sum(n for name, n in counts.items() if name.startswith("caption_form/")) == len(head)
    assert counts["caption_form_missing"] == sum(missing is not None for _, _, missing in head) > 0
    resumed = _pixel_dm(pixel_urls, keys, num_workers=workers)
    resumed.load_state_dict(state)
    rest = captions(resumed.train_dataloader())
    assert head + rest == full
    assert resumed.progress.counts == full_dm.progress.counts


# ---- latent shards -----------------------------------------------------------------------------------------


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _latent_shard(path: Path, n: int, text_emb: bool = False) -> str:
    samples = []
    for i in range(n):
        texts = _texts(i)
        meta = {"latent": {"has_audio": False, "fps": 24.0}}
        if "captions" in texts:
            meta["captions"] = texts["captions"]
        files = {
            "video_latent.npy": _npy(np.full((4, 1, 2, 2), i, np.float32)),
            "json": json.dumps(meta),
            "txt": texts["txt"],
        }
        if text_emb:
            files["text_emb.npy"] = _npy(np.ones((3, 8), np.float32))
            files["text_mask.npy"] = _npy(np.ones(3, np.bool_))
        samples.append((f"s{i:04d}", files))
    return str(shard_writer.write_shard(path, samples))


def test_latent_shards_mix_forms_and_count_the_fallback(tmp_path):
    url = _latent_shard(tmp_path / "lat.tar", 200)
    dm = LatentDataModule(url, batch_size=8, num_workers=0, shuffle_buffer=0, caption_keys={"short": 1.0})
    samples = _samples(dm.train_dataloader())
    assert len(samples) == 200
    for i, caption, meta in samples:
        texts = _texts(i)
        assert caption == (texts["captions"]["short"] if _has_short(i) else texts["txt"])
        assert meta["caption_form"] == ("short" if _has_short(i) else "txt")
    lacking = sum(not _has_short(i) for i in range(200))
    assert dm.progress.counts["caption_form_missing"] == lacking > 0
    assert dm.progress.counts["caption_form/short"] == 200 - lacking
    mixed = LatentDataModule(url, batch_size=8, num_workers=0, caption_keys={"txt": 0.4, "structured": 0.6})
    drawn = Counter(
        m.get("caption_form_missing", m["caption_form"]) for _, _, m in _samples(mixed.train_dataloader())
    )
    assert _within(drawn["structured"], 200, 0.6), drawn
    plain = LatentDataModule(url, batch_size=8, num_workers=0)  # the default: the txt
    assert all(c == _texts(i)["txt"] for i, c, _ in _samples(plain.train_dataloader()))


@pytest.mark.parametrize("workers", [0, 1])
def test_latent_shards_with_stored_text_embeddings_cannot_switch_caption(tmp_path, workers):
    url = _latent_shard(tmp_path / "emb.tar", 16, text_emb=True)
    dm = LatentDataModule(url, batch_size=4, num_workers=workers, caption_keys={"txt": 0.5, "short": 0.5})
    with pytest.raises(
        ValueError, match=r"caption_keys draws \['short'\].*stores text embeddings of its txt"
    ):
        next(iter(dm.train_dataloader()))
    assert issubclass(StreamConfigError, ValueError)
    # the txt alone is fine with stored embeddings: they belong to it
    dm = LatentDataModule(url, batch_size=4, num_workers=workers, caption_keys={"txt": 1.0, "short": 0.0})
    batch = next(iter(dm.train_dataloader()))
    assert batch["text_emb"].shape == (4, 3, 8) and [m["caption_form"] for m in batch["meta"]] == ["txt"] * 4


class _TinyImageVAE(torch.nn.Module):
    """Stand-in video VAE for encode_shards: (B, 3, 1, H, W) -> posterior (B, 4, 1, H / 8, W / 8)."""

    temporal_compression, spatial_compression = 4, 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv3d(3, 8, kernel_size=(1, 8, 8), stride=(1, 8, 8))

    def encode(self, video: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian.from_moments(self.proj(video))


class _FrozenText(torch.nn.Module):
    """Stand-in frozen text encoder: one 4-d embedding per UTF-8 byte."""

    dim, trainable = 4, False

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(len(c.encode()) for c in captions)
        ids = torch.zeros(len(captions), n)
        for i, c in enumerate(captions):
            ids[i, : len(c.encode())] = torch.tensor(list(c.encode()), dtype=torch.float32)
        return ids[..., None].expand(-1, -1, self.dim) / 255.0, ids != 0


def test_encoded_latent_shards_keep_the_caption_forms(tmp_path):
    """The real latent layout: encode_shards keeps the json captions, so the latent loader can mix them;
    with a frozen text encoder (stored embeddings of the txt) a switching mix is refused."""
    urls = _pixel_shards(tmp_path / "in", n=24, per_shard=12, sizes=((32, 32),))
    common = {"buckets": {"32px": [1]}, "batch_size": 4, "rank": 0, "world_size": 1}
    encode_shards(_TinyImageVAE(), None, urls, tmp_path / "lat", **common)
    encode_shards(_TinyImageVAE(), None, urls, tmp_path / "emb", text_encoder=_FrozenText(), **common)
    kw = {"batch_size": 4, "num_workers": 0, "caption_keys": {"structured": 1.0}}
    samples = _samples(LatentDataModule(str(tmp_path / "lat" / "shard-*.tar"), **kw).train_dataloader())
    assert len(samples) == 24
    for i, caption, meta in samples:
        texts = _texts(i)
        assert caption == (texts["captions"]["structured"] if "captions" in texts else texts["txt"])
        assert meta["caption_form"] == ("structured" if "captions" in texts else "txt")
    stored = LatentDataModule(str(tmp_path / "emb" / "shard-*.tar"), **kw)
    with pytest.raises(ValueError, match=r"caption_keys draws \['structured'\].*stores text embeddings"):
        next(iter(stored.train_dataloader()))


# ---- configs and the logged counters -----------------------------------------------------------------------


def test_data_configs_carry_caption_keys_and_name_the_dropout_knob(pixel_urls):
    for name in ("webdataset", "synthetic", "latents"):
        text = (CONF_DIR / "data" / f"{name}.yaml").read_text()
        assert "caption_keys: null" in text and "module.curriculum.caption_dropout" in text
        cfg = OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")
        cfg.train_urls, cfg.num_workers = pixel_urls, 0
        cfg.caption_keys = {"txt": 2, "dense": 2}
        assert instantiate(cfg).caption_mix.probs == {"txt": 0.5, "dense": 0.5}
    cfg = compose("train", ["experiment=dit_tiny", "data.caption_keys={txt:0.5,short:0.5}"])
    assert instantiate(cfg.data).caption_mix.probs == {"txt": 0.5, "short": 0.5}


def test_data_stats_callback_logs_caption_form_counts(pixel_urls):
    dm = _pixel_dm(pixel_urls, {"short": 1.0})
    for _ in dm.train_dataloader():
        pass

    class Module:
        logged: dict = {}

        def log_dict(self, stats, **kw):
            self.logged = stats

    class Trainer:
        datamodule = dm

    module = Module()
    DataStatsCallback().on_train_batch_end(Trainer(), module, None, {}, 0)
    lacking = sum(not _has_short(i) for i in range(240))
    assert module.logged["data/caption_form_missing"] == lacking
    assert module.logged["data/caption_form_missing/short"] == lacking
    assert module.logged["data/caption_form/short"] == 240 - lacking


# ---- caption dropout (classifier-free guidance) in both step kinds -----------------------------------------

DIT = {"_target_": "sora.models.dit.AVDiT", "hidden_size": 32, "depth": 2, "num_heads": 2, "text_dim": 16}
TEXT = {"_target_": "sora.models.text.ByteTextEncoder", "dim": 16, "depth": 1, "num_heads": 2}


def _dit_module(caption_dropout: float, image_prob: float) -> AVDiTModule:
    torch.manual_seed(0)
    module = AVDiTModule(
        dit=DIT,
        text_encoder=TEXT,
        curriculum={"caption_dropout": caption_dropout},
        image_prob=image_prob,
        optim={"lr": 1e-3, "warmup_steps": 0, "total_steps": 10},
    ).train()
    with torch.no_grad():  # off adaLN-zero: a fresh model predicts 0 whatever the text says
        for p in module.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


def _latent_batch(captions: list[str]) -> dict:
    g = torch.Generator().manual_seed(1)
    b = len(captions)
    return {
        "video_latent": torch.randn(b, 16, 3, 4, 4, generator=g),
        "audio_latent": torch.randn(b, 8, 9, generator=g),
        "has_audio": torch.ones(b, dtype=torch.bool),
        "caption": captions,
        "fps": torch.full((b,), 24.0),
    }


@pytest.mark.parametrize("image_prob", [0.0, 1.0], ids=["video_step", "image_step"])
def test_caption_dropout_really_drops_the_text(image_prob, monkeypatch):
    """caption_dropout 1: the loss is the same whatever the captions say, and the same as feeding the DiT's
    learned null text by hand (the same weights and draws); caption_dropout 0: the captions do matter."""
    a = ["a red ball falls", "a blue box hops"]
    b = ["one green cube..", "two pink rings."]  # same lengths: same text shapes

    def loss(module, captions):
        torch.manual_seed(7)  # the same timesteps, noise and curriculum draws for both captions
        out = module.compute_loss(_latent_batch(captions))
        assert module._image_step is (image_prob == 1.0)
        return out["loss"]

    dropped = _dit_module(1.0, image_prob)
    assert torch.allclose(loss(dropped, a), loss(dropped, b), rtol=0, atol=1e-6)
    by_hand = _dit_module(0.0, image_prob)  # same weights; its text is the null condition, no dropout

    def null_text(captions):
        emb, _ = by_hand.text_encoder.encode(list(captions))  # (B, N, D): N as in the dropped step
        null, mask = by_hand.dit.null_text_condition(len(captions), emb.shape[1])
        return null.to(emb.dtype), mask

    monkeypatch.setattr(by_hand, "encode_text", null_text)
    assert torch.allclose(loss(dropped, a), loss(by_hand, a), rtol=0, atol=1e-6)
    kept = _dit_module(0.0, image_prob)
    assert not torch.allclose(loss(kept, a), loss(kept, b), rtol=0, atol=1e-4)


@pytest.mark.parametrize("image_prob", [0.0, 1.0], ids=["video_step", "image_step"])
def test_caption_dropout_rate_in_both_step_kinds(image_prob, monkeypatch):
    module = _dit_module(0.2, image_prob)
    seen: list[torch.Tensor] = []
    forward = module.dit.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["drop_text"].detach().clone())
        return forward(*args, **kwargs)

    monkeypatch.setattr(module.dit, "forward", spy)
    with torch.no_grad():
        for _ in range(2):
            module.compute_loss(_latent_batch(["a red ball falls"] * 64))
    assert module._image_step is (image_prob == 1.0)
    drops = torch.cat(seen)
    assert drops.dtype == torch.bool and drops.numel() == 128
    assert _within(int(drops.sum()), 128, 0.2), int(drops.sum())
