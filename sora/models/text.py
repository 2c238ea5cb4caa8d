"""Text encoders: captions -> token embeddings and a padding mask.

`TextEncoder` is the interface the DiT training module and the pipeline code against. `ByteTextEncoder` (UTF-8
bytes) and `WordTextEncoder` (hashed words) are small transformers trained with the DiT, nothing to download.
`HFTextEncoder` loads a frozen Hugging Face encoder (T5, UMT5, CLIP text, any `AutoModel`) from a local path.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Literal

import torch
from torch import Tensor, nn

from sora.models.layers import MLP, attention

Precision = Literal["float32", "float16", "bfloat16", "fp32", "fp16", "bf16"]
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def _check_captions(captions: list[str]) -> None:
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"captions must be a list of str, got {type(captions).__name__}: {captions!r:.200}")


class TextEncoder(nn.Module, ABC):
    """Captions -> (emb (B, N, dim) float, mask (B, N) bool, True = real token).

    Attributes: `dim` (embedding width, the DiT's `text_dim`) and `trainable` (whether the training module
    should optimise it together with the DiT; frozen encoders are run under no_grad and may cache embeddings).
    """

    dim: int
    trainable: bool

    @abstractmethod
    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """captions (B strings) -> emb (B, N, dim), mask (B, N) bool."""

    @abstractmethod
    def num_tokens(self, captions: list[str]) -> int:
        """The padded sequence length `encode` returns for these captions, without running the encoder."""

    def forward(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """Same as `encode`."""
        return self.encode(captions)

    def fingerprint(self) -> str | None:
        """An id of what this encoder computes (its weights and settings). ``data_pipelines.latents`` stores
        it beside the text embeddings it precomputes with a frozen encoder, and the DiT's training step uses
        those only when its own encoder has the same id. None: no stable id (a trainable encoder changes as
        it trains), so stored embeddings are never taken for its own."""
        return None


POS_EMBED_STD = 0.2
"""Absolute positions start at a fifth of the word embeddings' scale: words first, order as it is learned."""


class _EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block with a key padding mask."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), "gelu")

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, N, D), mask (B, N) bool -> (B, N, D)."""
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, mask, backend="sdpa")  # (B, H, N, Dh)
        x = x + self.proj(out.transpose(1, 2).flatten(2))  # (B, N, D)
        return x + self.mlp(self.norm2(x))


class LearnedTextEncoder(TextEncoder):
    """A small text encoder trained with the DiT: token ids from `tokenize`, learned embeddings and absolute
    positions, `depth` pre-norm transformer layers, final LayerNorm. Subclasses define the vocabulary.

    Token 0 is padding and token 1 begin-of-text (always present, so an empty caption still has one real
    token); captions longer than `max_length - 1` tokens are truncated.
    """

    PAD, BOS, OFFSET = 0, 1, 2

    def __init__(
        self, vocab_size: int, dim: int, depth: int, num_heads: int, max_length: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.dim, self.max_length, self.trainable = dim, max_length, True
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(max_length, dim) * POS_EMBED_STD)
        self.blocks = nn.ModuleList(_EncoderBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_embed.weight, std=1.0)
        # Every block starts as the identity (zero output projections), so the encoder's first output is each
        # token's own embedding. With default-initialised branches, the first block's near-uniform attention
        # adds the caption's mean to every token at ~15x the size of the embeddings: all tokens came out
        # alike (mean cosine 0.93) and the DiT had no word to attend to until that was unlearned.
        for block in self.blocks:
            for layer in (block.proj, block.mlp.fc2):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @abstractmethod
    def token_ids(self, caption: str) -> list[int]:
        """One caption -> its token ids (each >= OFFSET), untruncated."""

    def tokenize(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """captions -> ids (B, N) long, mask (B, N) bool, N = longest caption in the batch (<= max_length)."""
        _check_captions(captions)
        rows = [[self.BOS] + self.token_ids(c)[: self.max_length - 1] for c in captions]
        n = max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), n), self.PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids.to(self.pos_embed.device), (ids != self.PAD).to(self.pos_embed.device)

    def num_tokens(self, captions: list[str]) -> int:
        return self.tokenize(captions)[0].shape[1]

    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """captions (B strings) -> emb (B, N, dim), mask (B, N) bool."""
        ids, mask = self.tokenize(captions)
        x = self.token_embed(ids) + self.pos_embed[: ids.shape[1]]  # (B, N, D)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask


class ByteTextEncoder(LearnedTextEncoder):
    """UTF-8 bytes (any language, emoji, etc.): token 2 + b for each byte b. Nothing to download, no tokenizer
    files, but long sequences (one token per character) and spelling to learn from scratch."""

    VOCAB_SIZE = 2 + 256

    def __init__(
        self,
        dim: int = 256,
        depth: int = 2,
        num_heads: int = 4,
        max_length: int = 256,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__(self.VOCAB_SIZE, dim, depth, num_heads, max_length, mlp_ratio)

    def token_ids(self, caption: str) -> list[int]:
        return [b + self.OFFSET for b in caption.encode("utf-8", errors="replace")]  # lone surrogates -> '?'


_WORD = re.compile(r"\w+|[^\w\s]")


class WordTextEncoder(LearnedTextEncoder):
    """Hashed words: captions are lower-cased and split into words and punctuation marks, and each piece goes
    to one of `vocab_size - 2` buckets by its CRC-32 (the hashing trick: no vocabulary file, any language, a
    collision only shares an embedding). About 4-5x fewer tokens than bytes, and a word is one token to
    learn rather than a spelling, so a DiT trained from scratch on a small caption set follows the words
    sooner. CRC-32 is stable across processes and machines (Python's ``hash`` of a str is not).
    """

    def __init__(
        self,
        dim: int = 256,
        depth: int = 2,
        num_heads: int = 4,
        max_length: int = 64,
        mlp_ratio: float = 4.0,
        vocab_size: int = 8192,
    ) -> None:
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (pad, begin-of-text, one bucket), got {vocab_size}")
        super().__init__(vocab_size, dim, depth, num_heads, max_length, mlp_ratio)
        self.buckets = vocab_size - self.OFFSET

    def words(self, caption: str) -> list[str]:
        """The pieces a caption is split into: lower-cased words and single punctuation marks."""
        return _WORD.findall(caption.lower())

    def token_ids(self, caption: str) -> list[int]:
        return [
            self.OFFSET + zlib.crc32(w.encode("utf-8", errors="replace")) % self.buckets
            for w in self.words(caption)
        ]


# Encoder-only classes for encoder-decoder families (AutoModel would load the unused decoder too).
_ENCODER_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
    "clip": "CLIPTextModel",
    "clip_text_model": "CLIPTextModel",
}


class HFTextEncoder(TextEncoder):
    """A frozen Hugging Face text encoder loaded from a local path (`local_files_only=True`: never downloads).

    T5/mT5/UMT5 load their encoder-only class, CLIP its text model, anything else `AutoModel` (using its
    encoder when it is an encoder-decoder). Embeddings are the last hidden states, returned as float32.
    Embeddings per caption are kept in an in-memory LRU cache (`cache_size` captions, on `cache_device`).

    The Hugging Face model is deliberately not a registered submodule: it is frozen and large, so it stays out
    of `state_dict()` (checkpoints), `parameters()` (optimisers, FSDP/DDP) and `train()`; `.to()`/`.cuda()`
    still move it (see `_apply`).
    """

    def __init__(
        self,
        path: str,
        dim: int | None = None,
        max_length: int = 256,
        dtype: Precision = "float32",
        cache_size: int = 1024,
        cache_device: str = "cpu",
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        vocab_size: int | None = None,
    ) -> None:
        # depth / num_heads / mlp_ratio / vocab_size size the trained encoders; the experiments set them under
        # model.text, so `model/text=hf` inherits them. The pretrained model has its own sizes: ignored here.
        del depth, num_heads, mlp_ratio, vocab_size
        super().__init__()
        try:
            import transformers
        except ImportError as err:
            raise ImportError(
                "HFTextEncoder needs the optional dependency transformers: "
                "pip install 'sora[hf]' (or pip install transformers)"
            ) from err
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            cls_name = _ENCODER_CLASSES.get(config.model_type)
            cls = getattr(transformers, cls_name) if cls_name else transformers.AutoModel
            model = cls.from_pretrained(path, local_files_only=True)
        except OSError as err:
            raise OSError(
                f"could not load a Hugging Face text encoder from {path!r} without network access "
                f"(local_files_only=True); give a local folder with config, weights and tokenizer "
                f"files: {err}"
            ) from err
        if cls_name is None and getattr(config, "is_encoder_decoder", False):
            model = model.get_encoder()
        model = model.to(_DTYPES[dtype]).eval().requires_grad_(False)
        model_dim = getattr(model.config, "hidden_size", None) or model.config.d_model
        if dim is not None and dim != model_dim:
            raise ValueError(f"dim={dim} does not match the encoder's hidden size {model_dim} at {path!r}")
        object.__setattr__(self, "model", model)  # not registered: see class docstring
        self.tokenizer = tokenizer
        self.path, self.dim, self.max_length, self.trainable = path, model_dim, max_length, False
        self.cache_size, self.cache_device = cache_size, torch.device(cache_device)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self.cache_hits = self.cache_misses = 0
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """``<model_type>-<16 hex>``: a hash of the model's config (without its path and the transformers
        version), ``max_length``, the weights' dtype and checksums of the input embedding matrix (two
        fine-tunes of one architecture differ there). Computed once."""
        if self._fingerprint is None:
            config = self.model.config.to_dict()
            for key in ("_name_or_path", "transformers_version"):
                config.pop(key, None)
            weight = self.model.get_input_embeddings().weight.detach().double()
            steps = torch.arange(weight.shape[0], dtype=torch.float64, device=weight.device)
            what = {
                "config": config,
                "max_length": self.max_length,
                "dtype": str(self.model.dtype),
                "weights": [f"{float(weight.sum()):.9e}", f"{float(steps @ weight.abs().sum(1)):.9e}"],
            }
            digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
            self._fingerprint = f"{config.get('model_type', 'hf')}-{digest[:16]}"
        return self._fingerprint

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - torch's private signature
        super()._apply(fn, recurse)
        self.model._apply(fn, recurse)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> HFTextEncoder:
        """Frozen: the HF model stays in eval mode (no dropout) whatever the parent does."""
        super().train(mode)
        self.model.eval()
        return self

    def num_tokens(self, captions: list[str]) -> int:
        _check_captions(captions)
        ids = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length)
        return max(1, max((len(i) for i in ids["input_ids"]), default=1))

    @torch.no_grad()
    def _embed(self, captions: list[str]) -> list[Tensor]:
        """Run the encoder on uncached captions -> one (n_i, dim) tensor per caption (real tokens only)."""
        tok = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids = tok["input_ids"].to(self.device)
        mask = tok["attention_mask"].to(self.device).bool()
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, N, D)
        return [hidden[i][mask[i]].to(self.cache_device) for i in range(len(captions))]

    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """captions (B strings) -> emb (B, N, dim) float32, mask (B, N) bool; N >= 1 (longest caption)."""
        _check_captions(captions)
        found: dict[str, Tensor] = {}
        for c in dict.fromkeys(captions):
            if c in self._cache:
                self._cache.move_to_end(c)
                found[c] = self._cache[c]
                self.cache_hits += 1
        missing = [c for c in dict.fromkeys(captions) if c not in found]
        if missing:
            self.cache_misses += len(missing)
            for c, emb in zip(missing, self._embed(missing)):
                found[c] = emb
                if self.cache_size > 0:
                    self._cache[c] = emb
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        embs = [found[c] for c in captions]
        n = max(1, max((e.shape[0] for e in embs), default=1))
        out = torch.zeros(len(embs), n, self.dim, device=self.device)
        mask = torch.zeros(len(embs), n, dtype=torch.bool, device=self.device)
        for i, e in enumerate(embs):
            out[i, : e.shape[0]] = e.to(self.device, torch.float32)
            mask[i, : e.shape[0]] = True
        return out, mask
