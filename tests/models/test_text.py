"""Text encoders: the byte and hashed-word encoders trained with the DiT, and the Hugging Face loader (tiny
random T5, UMT5 and CLIP encoders built offline)."""

from __future__ import annotations

import pytest
import torch

from sora.models.text import ByteTextEncoder, HFTextEncoder, TextEncoder, WordTextEncoder


@pytest.fixture(scope="module")
def byte_encoder() -> ByteTextEncoder:
    torch.manual_seed(0)
    return ByteTextEncoder(dim=32, depth=2, num_heads=2, max_length=64).eval()


def test_byte_encoder_shapes_and_masks(byte_encoder):
    emb, mask = byte_encoder.encode(["a red ball", "hi"])
    assert isinstance(byte_encoder, TextEncoder) and byte_encoder.trainable and byte_encoder.dim == 32
    assert emb.shape == (2, 11, 32) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [11, 3]  # begin-of-text + bytes
    assert torch.isfinite(emb).all()


def test_byte_encoder_unicode_empty_and_truncation(byte_encoder):
    captions = ["héllo 🌍 мир 世界", "", "x" * 500, "bad \ud800 surrogate"]
    emb, mask = byte_encoder.encode(captions)
    assert mask[0].sum().item() == 1 + len(captions[0].encode("utf-8"))
    assert mask[1].sum().item() == 1  # an empty caption keeps its begin-of-text token: no all-masked row
    assert mask[2].sum().item() == 64 and emb.shape[1] == 64
    assert torch.isfinite(emb).all()
    ids, _ = byte_encoder.tokenize(["é"])
    assert ids[0, 1:].tolist() == [b + ByteTextEncoder.OFFSET for b in "é".encode()]


def test_byte_encoder_ignores_padding_and_trains(byte_encoder):
    alone, _ = byte_encoder.encode(["short"])
    batched, mask = byte_encoder.encode(["short", "a much longer caption"])
    torch.testing.assert_close(batched[0, : mask[0].sum()], alone[0], atol=1e-5, rtol=1e-5)
    emb, _ = byte_encoder.encode(["grad"])
    emb.sum().backward()
    assert byte_encoder.token_embed.weight.grad is not None
    with pytest.raises(ValueError, match="list of str"):
        byte_encoder.encode("not a list")
    with pytest.raises(ValueError, match="list of str"):
        byte_encoder.encode(["ok", None])


def test_word_encoder_tokens_are_stable_hashed_words():
    torch.manual_seed(0)
    enc = WordTextEncoder(dim=32, depth=1, num_heads=2, max_length=8, vocab_size=1000).eval()
    assert isinstance(enc, TextEncoder) and enc.trainable and enc.dim == 32
    assert enc.words("A big RED ball, falls!") == ["a", "big", "red", "ball", ",", "falls", "!"]
    ids, mask = enc.tokenize(["A red ball.", "a RED ball .", "", "w " * 50])
    assert ids.shape == (4, 8) and mask.sum(1).tolist() == [5, 5, 1, 8]  # begin-of-text + pieces, truncated
    assert torch.equal(ids[0], ids[1])  # case and spacing do not matter
    assert ids[0, 0] == enc.BOS and ((ids[mask] >= 2) | (ids[mask] == enc.BOS)).all() and (ids < 1000).all()
    # CRC-32 buckets: the same ids in every process (Python's str hash is salted per process)
    import zlib

    assert ids[0, 2].item() == 2 + zlib.crc32(b"red") % 998
    assert enc.num_tokens(["A red ball.", "hi"]) == 5
    # Far fewer tokens than bytes for an English caption.
    caption = "A small green box in the lower left flies to the right in an arc and bounces on the floor."
    words = WordTextEncoder(dim=8, depth=1, num_heads=1, max_length=64)
    assert words.num_tokens([caption]) * 4 < len(caption)


def test_word_encoder_ignores_padding_and_trains():
    torch.manual_seed(0)
    enc = WordTextEncoder(dim=16, depth=2, num_heads=2, max_length=16).eval()
    alone, _ = enc.encode(["a red ball"])
    batched, mask = enc.encode(["a red ball", "a blue box falls to the left"])
    torch.testing.assert_close(batched[0, : mask[0].sum()], alone[0], atol=1e-5, rtol=1e-5)
    batched.sum().backward()
    assert enc.token_embed.weight.grad is not None and enc.token_embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="vocab_size"):
        WordTextEncoder(vocab_size=2)
    with pytest.raises(ValueError, match="list of str"):
        enc.encode("not a list")


@pytest.mark.parametrize("cls", [ByteTextEncoder, WordTextEncoder])
def test_fresh_learned_encoders_keep_tokens_apart(cls):
    # Blocks start as the identity: a fresh encoder's tokens are their own embeddings, not the caption's
    # mean (default-initialised blocks gave a mean cosine of 0.93 between the tokens of one caption).
    torch.manual_seed(0)
    enc = cls(dim=128, depth=2, num_heads=2)
    emb, _ = enc.encode(["A tiny white circle near the top left is dropped and hits a large orange box."])
    x = torch.nn.functional.normalize(emb[0].detach(), dim=-1)
    n = x.shape[0]
    mean_cos = float(((x @ x.T).sum() - n) / (n * n - n))
    assert mean_cos < 0.3, mean_cos


WORDS = ["<pad>", "</s>", "<unk>", "<s>", "a", "red", "ball", "falls", "blue", "cube", "the"]
HF_CLASSES = {"t5": "T5EncoderModel", "umt5": "UMT5EncoderModel", "clip": "CLIPTextModel"}


def _tiny_hf_encoder(kind: str, path) -> None:
    """A tiny random T5 / UMT5 / CLIP text encoder (hidden size 16) and a word-level tokenizer over WORDS,
    saved to ``path`` the way ``save_pretrained`` writes a real one: built offline, nothing downloads."""
    import tokenizers
    import transformers

    tok = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>")
    )
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    ).save_pretrained(path)
    ids = {"vocab_size": len(WORDS), "pad_token_id": 0, "eos_token_id": 1}
    t5 = {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 2, "num_heads": 2, "decoder_start_token_id": 0}
    configs = {
        "t5": lambda: transformers.T5Config(**ids, **t5),
        "umt5": lambda: transformers.UMT5Config(**ids, **t5),
        "clip": lambda: transformers.CLIPTextConfig(
            **ids,
            bos_token_id=3,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
        ),
    }
    torch.manual_seed(0)
    getattr(transformers, HF_CLASSES[kind])(configs[kind]()).eval().save_pretrained(path)


@pytest.fixture(scope="module", params=sorted(HF_CLASSES))
def tiny_hf(request, tmp_path_factory):
    """(kind, path) of a tiny saved encoder of each family real runs use."""
    path = tmp_path_factory.mktemp(f"tiny_{request.param}")
    _tiny_hf_encoder(request.param, path)
    return request.param, path


def test_hf_encoder_loads_locally_frozen_and_cached(tiny_hf):
    import transformers

    kind, path = tiny_hf
    enc = HFTextEncoder(str(path), dim=16, max_length=8, cache_size=2)
    assert type(enc.model).__name__ == HF_CLASSES[kind]  # the encoder-only class of each family
    assert enc.dim == 16 and not enc.trainable
    assert not any(p.requires_grad for p in enc.model.parameters())
    captions = ["a red ball falls", "the blue cube", ""]
    emb, mask = enc.encode(captions)
    assert emb.shape == (3, 4, 16) and emb.dtype == torch.float32
    assert mask.sum(1).tolist() == [4, 3, 0] and enc.num_tokens(captions) == 4
    assert emb.requires_grad is False and torch.equal(emb[2], torch.zeros(4, 16))
    # Same as running the saved model directly on each unpadded caption (padding changes nothing).
    reference = getattr(transformers, HF_CLASSES[kind]).from_pretrained(path, local_files_only=True).eval()
    with torch.no_grad():
        want0 = reference(input_ids=torch.tensor([[4, 5, 6, 7]])).last_hidden_state[0]
        want1 = reference(input_ids=torch.tensor([[10, 8, 9]])).last_hidden_state[0]
    torch.testing.assert_close(emb[0], want0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb[1, :3], want1, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(emb[0, :3], emb[1, :3], atol=1e-3), "different captions, different embeddings"
    # LRU cache: repeated captions are not recomputed; capacity 2 evicts the least recently used.
    misses = enc.cache_misses
    emb2, _ = enc.encode(["the blue cube", ""])
    assert enc.cache_misses == misses and torch.equal(emb2[0], emb[1][:3])
    assert list(enc._cache) == ["the blue cube", ""]
    # The frozen model stays out of checkpoints and optimisers, and out of train mode.
    assert enc.state_dict() == {} and list(enc.parameters()) == []
    assert not enc.train().model.training


def test_hf_encoder_half_precision(tiny_hf):
    enc = HFTextEncoder(str(tiny_hf[1]), dtype="bf16")
    assert next(enc.model.parameters()).dtype == torch.bfloat16
    emb, _ = enc.encode(["a red ball"])
    assert emb.dtype == torch.float32 and torch.isfinite(emb).all()


def test_hf_encoder_clear_errors(tiny_hf, tmp_path):
    with pytest.raises(ValueError, match="does not match the encoder's hidden size 16"):
        HFTextEncoder(str(tiny_hf[1]), dim=4096)
    with pytest.raises(OSError, match="local_files_only"):
        HFTextEncoder(str(tmp_path / "missing"))


def test_dit_trains_with_a_local_hf_encoder_from_the_config(tmp_path):
    """``model/text=hf`` with a local folder: the experiment's module builds and takes a step on its text."""
    from hydra.utils import instantiate

    from sora.config import compose

    _tiny_hf_encoder("t5", tmp_path / "t5")
    cfg = compose(
        "train",
        ["experiment=dit_tiny", "model/text=hf", f"model.text.path={tmp_path / 't5'}", "model.text.dim=16"],
    )
    module = instantiate(cfg.module, _recursive_=False)
    assert isinstance(module.text_encoder, HFTextEncoder) and module.dit.text_dim == 16
    with torch.no_grad():  # off adaLN-zero, so the text path gets gradients
        for p in module.dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    batch = {
        "video_latent": torch.randn(2, 16, 2, 4, 4),
        "audio_latent": torch.randn(2, 8, 9),
        "has_audio": torch.tensor([True, True]),
        "caption": ["a red ball falls", "the blue cube"],
        "fps": torch.full((2,), 24.0),
    }
    out = module.compute_loss(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and module.dit.text_embed[0].weight.grad.abs().sum() > 0
    assert not any(k.startswith("text_encoder.") for k in module.state_dict())  # frozen: not in checkpoints


def test_hf_encoder_fingerprint_names_its_weights_and_settings(tmp_path):
    """Loaded from one folder or a copy elsewhere: one id; other weights or another max_length: another."""
    import shutil

    import transformers

    _tiny_hf_encoder("t5", tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    model = transformers.T5EncoderModel.from_pretrained(tmp_path / "a")
    with torch.no_grad():
        model.get_input_embeddings().weight[5, 0] += 0.01  # a fine-tune that moved one word
    model.save_pretrained(tmp_path / "b")
    shutil.copy(tmp_path / "a" / "tokenizer.json", tmp_path / "b")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (tmp_path / "a" / name).exists():
            shutil.copy(tmp_path / "a" / name, tmp_path / "b")
    a = HFTextEncoder(str(tmp_path / "a")).fingerprint()
    assert a.startswith("t5-") and a == HFTextEncoder(str(tmp_path / "copy")).fingerprint()
    assert HFTextEncoder(str(tmp_path / "b")).fingerprint() != a
    assert HFTextEncoder(str(tmp_path / "a"), max_length=8).fingerprint() != a
    assert WordTextEncoder(dim=8).fingerprint() is None  # trains: no stable id


def test_dit_step_uses_the_stored_text_embeddings_of_its_own_encoder(tmp_path, caplog):
    """Latents made with this run's frozen encoder (its fingerprint in every clip's json): the step takes
    their text_emb and never runs the encoder, for the loss encoding gives; another encoder's embeddings
    are not used (the captions are encoded, one warning says why)."""
    import logging

    from hydra.utils import instantiate

    from sora.config import compose

    _tiny_hf_encoder("t5", tmp_path / "t5")
    cfg = compose(
        "train",
        ["experiment=dit_tiny", "model/text=hf", f"model.text.path={tmp_path / 't5'}", "model.text.dim=16"],
    )
    module = instantiate(cfg.module, _recursive_=False)
    with torch.no_grad():  # off adaLN-zero, so the text changes the loss
        for p in module.dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    captions = ["a red ball falls", "the blue cube"]
    emb, mask = module.text_encoder.encode(captions)
    mine = {"latent": {"text_encoder": module.text_encoder.fingerprint()}}
    plain = {
        "video_latent": torch.randn(2, 16, 2, 4, 4),
        "audio_latent": torch.randn(2, 8, 9),
        "has_audio": torch.tensor([True, True]),
        "caption": captions,
        "fps": torch.full((2,), 24.0),
    }

    def loss(batch: dict) -> torch.Tensor:
        torch.manual_seed(0)
        with torch.no_grad():
            return module.compute_loss(batch)["loss"]

    encoded = loss(plain)
    calls, encode = [], module.text_encoder.encode
    module.text_encoder.encode = lambda c: calls.append(list(c)) or encode(c)
    stored = {**plain, "text_emb": emb, "text_mask": mask, "meta": [mine, mine]}
    assert torch.allclose(loss(stored), encoded) and calls == []
    swapped = {**stored, "text_emb": emb.flip(0), "text_mask": mask.flip(0)}
    assert not torch.allclose(loss(swapped), encoded) and calls == []  # the stored ones are what it used
    other = {**stored, "meta": [mine, {"latent": {"text_encoder": "t5-0123456789abcdef"}}]}
    with caplog.at_level(logging.WARNING, logger="sora.training.dit_module"):
        assert torch.allclose(loss(other), encoded) and calls == [captions]
        loss(other)
    assert caplog.text.count("stored text embeddings are not used") == 1
    assert "t5-0123456789abcdef" in caplog.text


def test_hf_encoder_without_transformers_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(ImportError, match="pip install"):
        HFTextEncoder("/nonexistent")


@pytest.mark.parametrize("experiment", ["dit_tiny", "dit_S"])
def test_hf_encoder_accepts_what_the_experiments_set(experiment):
    """`model/text=hf` on an experiment that sizes the trained encoders (depth, num_heads) still builds."""
    import inspect

    from sora.checkpoint import to_plain_dict
    from sora.config import compose

    overrides = [f"experiment={experiment}", "model/text=hf", "model.text.path=/x", "model.text.dim=8"]
    cfg = compose("train", overrides)
    text = to_plain_dict(cfg.model.text)
    assert text.pop("_target_") == "sora.models.text.HFTextEncoder" and "depth" in text
    inspect.signature(HFTextEncoder).bind(**text)  # raises TypeError on an unexpected keyword
