"""Caption-form alignment of a trainable text encoder: each clip's captions, dense and short, encoded alike.

A dense caption says where things are in many phrasings, among words of the same kind that say where they go
("At the bottom right, a red box flies to the left ... hits the left wall"): on the synthetic world, 71 % of
the dense captions of single-object clips that start on the left also contain "right". A text encoder trained
from scratch with the DiT does not untangle that before the DiT has settled on ignoring the side words, and
the DiT never learned left from right on dense captions (README, "Dense captions and the text encoder"). The
terse form ("a red box on the right is thrown to the left") says it in one fixed place. The symmetric InfoNCE
between the mean-pooled encodings of two forms of the same clip, the other clips as negatives, makes the
encoder pull out of the dense caption what tells the short ones apart: colour, shape, side, motion.

Two uses, one loss (:func:`alignment_loss`):
- :func:`pretrain` (``python -m sora.training.text_align``, and the quickstart's ``text`` stage): the
  encoder alone on the shards' caption pairs for a few hundred steps (seconds to a minute on a CPU), saved
  for ``AVDiTModule(text_encoder_ckpt=...)``;
- ``AVDiTModule(text_align={weight, ...})``: the same loss added to every DiT step, on the batch's pairs.

    python -m sora.training.text_align 'outputs/latents/shard-*.tar' text_encoder.pt --dim 128 --steps 200
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

Encode = Callable[[list[str]], tuple[Tensor, Tensor]]


def pool(emb: Tensor, mask: Tensor) -> Tensor:
    """(B, D) float: the unit-norm mean of each row's real tokens (``mask`` True; padding left out)."""
    m = mask[..., None].to(emb.dtype)
    return nn.functional.normalize(((emb * m).sum(1) / m.sum(1).clamp(min=1)).float(), dim=-1)


def pooled(encode: Encode, captions: list[str]) -> Tensor:
    """(B, D) float: :func:`pool` of the captions' encodings."""
    return pool(*encode(captions))


def info_nce(ours: Tensor, theirs: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between pooled encodings (B, D): row i of each is a pair, every other row of the
    other a negative."""
    if ours.shape != theirs.shape or ours.shape[0] < 2:
        raise ValueError(f"info_nce needs >= 2 pairs, got {tuple(ours.shape)} and {tuple(theirs.shape)}")
    logits = ours @ theirs.T / temperature
    target = torch.arange(ours.shape[0], device=logits.device)
    ce = nn.functional.cross_entropy
    return 0.5 * (ce(logits, target) + ce(logits.T, target))


def alignment_loss(encode: Encode, ours: Sequence[str], theirs: Sequence[str], temperature: float) -> Tensor:
    """Symmetric InfoNCE between the pooled encodings of ``ours[i]`` and ``theirs[i]`` (two forms of clip i),
    every other pair of the batch a negative; one encoder call for both lists."""
    if len(ours) != len(theirs) or len(ours) < 2:
        raise ValueError(f"alignment_loss needs >= 2 pairs, got {len(ours)} and {len(theirs)} captions")
    z = pooled(encode, [*ours, *theirs])
    return info_nce(z[: len(ours)], z[len(ours) :], temperature)


def caption_pairs(
    urls: str | Sequence[str], form: str = "short"
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(txt, json ``captions[form]``) of every sample of the shards that has both (pixel or latent shards,
    the world's or ``recaption.run``'s); returns the pairs and what was skipped, counted by reason."""
    from data_pipelines.shard_reader import expand_urls, read_shards

    skipped: dict[str, int] = {}

    def skip(reason: str, *_: object) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    pairs = []
    for sample in read_shards(expand_urls(urls), skip):
        try:
            txt = sample["txt"].decode("utf-8").strip() if "txt" in sample else ""
            other = (json.loads(sample["json"]).get("captions") or {}).get(form) if "json" in sample else None
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            skip("unreadable_caption")
            continue
        if not txt or not isinstance(other, str) or not other.strip():
            skip(f"no_txt_or_{form}")
        elif other.strip() != txt:
            pairs.append((txt, other.strip()))
    return pairs, skipped


def pretrain(
    text_encoder: nn.Module,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 1e-3,
    temperature: float = 0.1,
    seed: int = 0,
    log_every: int = 50,
) -> list[float]:
    """``steps`` AdamW steps of :func:`alignment_loss` on random batches of ``pairs``; returns the losses."""
    if len(pairs) < 2:
        raise ValueError(f"text pretraining needs >= 2 caption pairs, got {len(pairs)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(text_encoder.parameters(), lr=lr, weight_decay=0.0)
    batch = min(batch_size, len(pairs))
    text_encoder.train()
    losses, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randperm(len(pairs), generator=gen)[:batch].tolist()
        loss = alignment_loss(
            text_encoder.encode, [pairs[i][0] for i in idx], [pairs[i][1] for i in idx], temperature
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            log.info(
                "text pretraining: step %d/%d, loss %.3f, %.0f s",
                step,
                steps,
                losses[-1],
                time.perf_counter() - start,
            )
    return losses


def retrieval_accuracy(encode: Encode, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> float:
    """Share of pairs whose first caption's nearest second caption, among ``batch_size``, is its own."""
    hits = total = 0
    with torch.no_grad():
        for i in range(0, len(pairs) - 1, batch_size):
            chunk = pairs[i : i + batch_size]
            a, b = pooled(encode, [p[0] for p in chunk]), pooled(encode, [p[1] for p in chunk])
            hits += int((a @ b.T).argmax(1).eq(torch.arange(len(chunk))).sum())
            total += len(chunk)
    return hits / max(total, 1)


def save(text_encoder: nn.Module, config: dict, path: str | Path, meta: dict | None = None) -> Path:
    """The encoder's weights and config (``_target_`` + kwargs) for ``AVDiTModule(text_encoder_ckpt=)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"config": dict(config), "state_dict": text_encoder.state_dict(), "meta": meta or {}}, tmp)
    tmp.replace(path)
    return path


def load_into(text_encoder: nn.Module, config: dict, path: str | Path) -> dict:
    """Load a :func:`save` file into ``text_encoder``; the settings both configs name must be equal, and the
    weights must fit. Returns the file's meta."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    saved, mine = dict(blob["config"]), dict(config)
    differ = {k: (saved[k], mine[k]) for k in set(saved) & set(mine) if saved[k] != mine[k]}
    if differ:
        raise ValueError(
            f"{path}: the text encoder was pretrained with other settings (saved, this): {differ}"
        )
    text_encoder.load_state_dict(blob["state_dict"])  # strict: another size or depth fails here
    return blob.get("meta", {})


def main(argv: list[str] | None = None) -> None:
    from sora.checkpoint import build_module

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", help="shards (glob or brace pattern) whose samples have a txt and json captions")
    p.add_argument("out", help="where to write the encoder (.pt)")
    p.add_argument("--form", default="short", help="the json captions[form] paired with each txt")
    p.add_argument("--encoder", default="sora.models.text.WordTextEncoder")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pairs, skipped = caption_pairs(args.shards, args.form)
    print(f"{len(pairs)} caption pairs (skipped: {skipped or 'none'})")
    config = {
        "_target_": args.encoder,
        "dim": args.dim,
        "depth": args.depth,
        "num_heads": args.heads,
        "max_length": args.max_length,
    }
    torch.manual_seed(args.seed)
    encoder = build_module(config)
    before = retrieval_accuracy(encoder.encode, pairs)
    losses = pretrain(encoder, pairs, steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed)
    after = retrieval_accuracy(encoder.encode, pairs)
    meta = {
        "pairs": len(pairs),
        "form": args.form,
        "steps": args.steps,
        "loss": losses[-1],
        "retrieval": after,
    }
    save(encoder, config, args.out, meta)
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; retrieval in batches of 64 {before:.2f} -> "
        f"{after:.2f}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
