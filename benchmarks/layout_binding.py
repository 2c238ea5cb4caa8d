"""Does a DiT put things where the caption says? The **layout score**: no sampling, no eval suite, ~20 s.

    python benchmarks/layout_binding.py DIT.ckpt 'outputs/quickstart/latents/shard-*.tar' [--form txt|short]
        [--raw] [--sample SEEDS [--guidance 5]]
    python benchmarks/layout_binding.py DIT.ckpt 'LATENTS' --train 800 [--single] [--form short] [--seed 0]
        [--batch 16] [--mix] [--shift 1.6] [--cosine] [--dropout 0.1] [--recipe-adamw] [--lr 1e-3]
        [--pretext 300] [--align 0.1]

The score's clips are the held-out single-object clips among the last 400 of the glob whose object starts on
the left or on the right (the metadata's side). Their first latent frames' conditional means differ by
``d = E[x0 | left] - E[x0 | right]`` (normalised latents). At a high noise level t the model's clean-frame
estimate from pure noise, ``x0_hat = x_t - t v`` with ``x_t = t * noise``, can only come from the caption,
and the best one is that conditional mean. The score is the projection of the model's
``mean x0_hat(left captions) - mean x0_hat(right captions)`` (the same noise for both) on ``d``, over
``|d|^2``: 1 = the model predicts the data's layout prior, 0 = it ignores the side words. Printed at
t = 0.99, 0.95 and 0.9; with ~50 clips a side, |score| < 0.03 is noise.

``--sample N`` also samples first frames of "On the left/right, a big <colour> ball falls." (4 colours, N
seeds, the same seed for both sides) and prints how often the named colour lands on the named side and how
far apart the two prompts put it. ``--train N`` instead trains a fresh DiT of the checkpoint's architecture
for N text-to-image steps in a minimal loop (no Lightning, no schedule, no EMA: :func:`train_fresh`) on the
other clips' first frames and prints the score every 200 steps, on the held-out clips' short captions and on
their dense ones (the eval prompts with those): a 2-minute harness for recipe experiments. ``--pretext N``
first aligns the fresh text encoder alone for N steps and ``--align w`` adds that loss to every step
(:mod:`sora.training.text_align`, as the quickstart's ``text_pretrain`` and ``module.text_align``).

Measured 2026-12-03 on 2048 clips of the quickstart's slice encoded by the quickstart's VAEs: see the README,
"Why left/right is at chance" (every trained recipe scores 0; the bare loop binds left/right on single-object
images, and each of the recipe's ingredients that the switches above add back delays that).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import tarfile
import time
from dataclasses import dataclass

import numpy as np
import torch

HOLDOUT = 400
"""The last clips of the glob: the score's clips, left out of ``--train``."""


@dataclass
class Clip:
    caption: str  # the clip's txt, or its short form (``--form``)
    other: str  # the other form (``--train --mix`` draws either)
    sides: tuple[str, ...]  # each object's start side (left / centre / right), from the metadata
    z: np.ndarray  # (C, 1, H, W) first latent frame, as stored (not normalised)


def load_clips(pattern: str, form: str) -> list[Clip]:
    """Every clip of the shards (sorted paths, then keys): caption, object sides, first latent frame."""
    from data_pipelines.synthetic.captions import caption_forms, scene_facts

    clips = []
    for path in sorted(glob.glob(pattern)):
        with tarfile.open(path) as tar:
            members: dict[str, dict[str, bytes]] = {}
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for _, parts in sorted(members.items()):
            meta = json.loads(parts["json"])
            meta = {**meta, "caption": parts["txt"].decode()}
            forms = [caption_forms(meta)["short"], meta["caption"]][:: 1 if form == "short" else -1]
            sides = tuple(o["side"] for o in scene_facts(meta)["objects"])
            clips.append(Clip(*forms, sides, np.load(io.BytesIO(parts["video_latent.npy"]))[:, :1]))
    if len(clips) <= HOLDOUT:
        raise SystemExit(f"{pattern}: {len(clips)} clips, need more than {HOLDOUT}")
    return clips


def score_sides(clips: list[Clip]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The held-out single-object clips that start on the left / on the right: (caption, latent)."""
    out: dict[str, list[tuple[str, np.ndarray]]] = {"left": [], "right": []}
    for c in clips[-HOLDOUT:]:
        if len(c.sides) == 1 and c.sides[0] in out:
            out[c.sides[0]].append((c.caption, c.z))
    if min(len(v) for v in out.values()) < 8:
        raise SystemExit(f"too few held-out single-object left/right clips: {[len(v) for v in out.values()]}")
    return out


@torch.no_grad()
def layout_score(dit, text_encoder, normalize, sides, t: float, seed: int = 0) -> float:
    """Projection of the model's left-minus-right x0_hat on the data's, over the data's squared norm."""
    n = min(len(v) for v in sides.values())
    z = {s: normalize(torch.from_numpy(np.stack([x for _, x in v[:n]]))).float() for s, v in sides.items()}
    d = z["left"].mean(0) - z["right"].mean(0)
    noise = torch.randn((n, *d.shape), generator=torch.Generator().manual_seed(seed))
    x0_hat = {}
    for s, v in sides.items():
        emb, mask = text_encoder.encode([c for c, _ in v[:n]])
        tt = torch.full((n,), t)
        pred, _ = dit(t * noise, None, tt, None, emb.float(), mask, video_frame_seconds=1.0 / 6)
        x0_hat[s] = (t * noise - t * pred.float()).mean(0)
    dm = x0_hat["left"] - x0_hat["right"]
    return float((dm * d).sum() / (d * d).sum())


def train_fresh(args, clips: list[Clip], normalize, dit_config: dict, sides) -> None:
    """Text-to-image steps of a fresh DiT (the checkpoint's architecture) and a fresh hashed-word text
    encoder (the quickstart's: depth 2, 2 heads) on the first latent frames of all but the held-out clips:
    the plain flow loss, logit-normal(0, 1) timesteps (``--shift``: shifted as the recipe's are),
    constant-lr AdamW with torch's defaults (``--recipe-adamw``: the recipe's betas, no decay, gradient
    clipping at 1; ``--cosine``: the recipe's 100-step warm-up and cosine to 0.1 lr), batch ``--batch``,
    captions in ``--form`` (``--mix``: either form, half and half, as the quickstart's ``caption_keys``), no
    caption dropout (``--dropout``), no EMA; ``--pretext`` / ``--align``: caption-form alignment of the text
    encoder before / during training. The layout score every 200 steps on short and on dense captions."""
    from sora.diffusion.flow import (
        add_noise,
        flow_loss,
        sample_logit_normal,
        shift_timesteps,
        velocity_target,
    )
    from sora.models.dit import AVDiT
    from sora.models.text import WordTextEncoder
    from sora.training.optim import OptimConfig, warmup_cosine
    from sora.training.text_align import alignment_loss, pretrain

    train = [c for c in clips[:-HOLDOUT] if not args.single or len(c.sides) == 1]
    z_all = normalize(torch.from_numpy(np.stack([c.z for c in train]))).float()
    torch.manual_seed(args.seed)
    dit = AVDiT(**dit_config)
    text = WordTextEncoder(dim=dit.text_dim, depth=2, num_heads=2, max_length=64)
    if args.pretext:  # (dense, short) pairs of the training clips
        pairs = [(c.other, c.caption) if args.form == "short" else (c.caption, c.other) for c in train]
        losses = pretrain(text, pairs, steps=args.pretext, batch_size=64, seed=args.seed)
        print(f"text encoder aligned: loss {losses[0]:.2f} -> {losses[-1]:.2f} in {args.pretext} steps")
    params = [*dit.parameters(), *text.parameters()]
    kw = {"betas": (0.9, 0.99), "weight_decay": 0.0} if args.recipe_adamw else {}
    opt = torch.optim.AdamW(params, lr=args.lr, **kw)
    schedule = OptimConfig(lr=args.lr, warmup_steps=100, total_steps=args.train)
    g, t0, b = torch.Generator().manual_seed(args.seed), time.perf_counter(), args.batch
    forms = f"{args.form} and the other form" if args.mix else args.form
    print(f"training on {len(train)} clips ({'single-object' if args.single else 'all'}, {forms} captions)")
    for step in range(1, args.train + 1):
        if args.cosine:
            for group in opt.param_groups:
                group["lr"] = args.lr * warmup_cosine(step - 1, schedule)
        idx = torch.randint(0, len(train), (b,), generator=g).tolist()
        other = (torch.rand(b, generator=g) < 0.5).tolist() if args.mix else [False] * b
        emb, mask = text.encode([train[i].other if o else train[i].caption for i, o in zip(idx, other)])
        z, t = z_all[idx], shift_timesteps(sample_logit_normal(b, 0.0, 1.0, generator=g), args.shift)
        noise = torch.randn(z.shape, generator=g)
        drop = torch.rand(b, generator=g) < args.dropout
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_t = add_noise(z, noise, t)
            pred, _ = dit(x_t, None, t, None, emb, mask, video_frame_seconds=1 / 6, drop_text=drop)
        ones = torch.ones(b, 1, dtype=torch.bool)
        loss = flow_loss({"video": pred}, {"video": velocity_target(z, noise)}, {"video": ones})["loss"]
        if args.align:
            dense = [train[i].caption if args.form == "txt" else train[i].other for i in idx]
            short = [train[i].other if args.form == "txt" else train[i].caption for i in idx]
            loss = loss + args.align * alignment_loss(text.encode, dense, short, 0.1)
        opt.zero_grad()
        loss.backward()
        if args.recipe_adamw:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 200 == 0:
            dit.eval()
            scores = {form: layout_score(dit, text, normalize, s, 0.95) for form, s in sides.items()}
            dit.train()
            print(
                f"step {step}: loss {loss.item():.3f}, layout score (t=0.95) on short captions "
                f"{scores['short']:.3f}, on dense ones {scores['txt']:.3f}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )


def run(args: argparse.Namespace) -> None:
    from sora.pipeline import AVPipeline

    if args.checkpoint.endswith(".ckpt"):
        pipe = AVPipeline.from_checkpoint(args.checkpoint, use_ema=not args.raw)
    else:
        pipe = AVPipeline.from_export(args.checkpoint)
    clips = load_clips(args.latents, args.form)
    sides = score_sides(clips)
    normalize = pipe.video_vae.normalize_latents
    if args.train:
        swapped = score_sides([Clip(c.other, c.caption, c.sides, c.z) for c in clips])
        both = {args.form: sides, ("txt" if args.form == "short" else "short"): swapped}
        train_fresh(args, clips, normalize, pipe.dit.config, both)
        return
    dit = pipe.dit.float().eval()
    n = min(len(v) for v in sides.values())
    for t in (0.99, 0.95, 0.9):
        score = layout_score(dit, pipe.text_encoder, normalize, sides, t)
        print(f"t={t}: layout score {score:.3f} (1 = the data's layout prior, 0 = side words ignored), n={n}")
    if args.sample:
        sample_probe(pipe, args.sample, args.guidance)


def colour_x(frame: np.ndarray, rgb: tuple[int, int, int], tol: int = 120) -> float | None:
    """Mean column (fraction of the width) of the pixels within ``tol`` (L1) of ``rgb``; None if < 3."""
    near = np.abs(frame.astype(int) - np.array(rgb)).sum(-1) < tol
    return float(np.nonzero(near)[1].mean() / frame.shape[1]) if near.sum() >= 3 else None


def sample_probe(pipe, seeds: int, guidance: float) -> None:
    """First frames sampled for "On the left/right, a big <colour> ball falls." with the same seed: where the
    named colour lands (x as a fraction of the width), how often on the named side, and how far apart."""
    from data_pipelines.synthetic.palette import PALETTE
    from sora.pipeline import GenerationRequest

    hits, gaps = [], []
    for colour in ("red", "blue", "green", "yellow"):
        for seed in range(seeds):
            x = {}
            for side in ("left", "right"):
                prompt = f"On the {side}, a big {colour} ball falls."
                req = GenerationRequest(prompt, seed=seed, steps=20, num_frames=1, video_guidance=guidance)
                x[side] = colour_x(pipe.generate(req).video[0], PALETTE[colour])
            hits += [x["left"] is not None and x["left"] < 0.5, x["right"] is not None and x["right"] > 0.5]
            if None not in x.values():
                gaps.append(abs(x["left"] - x["right"]))
    gap = f"{np.mean(gaps):.2f}" if gaps else "n/a"
    print(
        f"sampled first frames, guidance {guidance}: named colour on the named side {np.mean(hits):.2f} "
        f"(n={len(hits)}), |x(left prompt) - x(right prompt)| {gap} of the width (n={len(gaps)} seed pairs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="DiT .ckpt (EMA unless --raw) or export folder")
    parser.add_argument("latents", help="glob of latent shards with .txt captions and .json metadata")
    parser.add_argument("--form", choices=("txt", "short"), default="txt")
    parser.add_argument("--raw", action="store_true", help="a .ckpt's raw weights instead of its EMA")
    parser.add_argument("--sample", type=int, default=0, help="also sample first frames: seeds per colour")
    parser.add_argument("--guidance", type=float, default=5.0, help="video guidance of --sample")
    parser.add_argument("--train", type=int, default=0, help="train a fresh DiT this many steps instead")
    parser.add_argument("--single", action="store_true", help="--train on single-object clips only")
    parser.add_argument("--seed", type=int, default=0, help="--train seed")
    parser.add_argument("--lr", type=float, default=1e-3, help="--train learning rate")
    parser.add_argument("--batch", type=int, default=16, help="--train batch size")
    parser.add_argument("--mix", action="store_true", help="--train on either caption form, half and half")
    parser.add_argument("--shift", type=float, default=1.0, help="--train timestep shift (the recipe: ~1.6)")
    parser.add_argument("--cosine", action="store_true", help="--train with the recipe's warm-up + cosine")
    parser.add_argument("--dropout", type=float, default=0.0, help="--train caption dropout (recipe: 0.1)")
    parser.add_argument("--pretext", type=int, default=0, help="--train: align the text encoder first")
    parser.add_argument("--align", type=float, default=0.0, help="--train: the alignment loss's weight")
    parser.add_argument(
        "--recipe-adamw", action="store_true", help="--train with betas (0.9, 0.99), no decay, clip 1.0"
    )
    args = parser.parse_args()
    run(args)


if __name__ == "__main__":
    main()
