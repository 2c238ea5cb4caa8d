"""Caption-form alignment of the text encoder (sora/training/text_align.py): the pairs read from shards, the
pretraining that makes a dense caption find its short form, the saved file the DiT module starts from, and the
quickstart's use of it."""

import itertools
import json

import pytest
import torch

from sora.models.text import WordTextEncoder
from sora.training.text_align import (
    alignment_loss,
    caption_pairs,
    load_into,
    pretrain,
    retrieval_accuracy,
    save,
)

TEXT = {
    "_target_": "sora.models.text.WordTextEncoder",
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "max_length": 32,
}
COLOURS = ["red", "blue", "green", "white"]
SHAPES = ["ball", "box"]
SIDES = ["left", "right"]


def _pairs():
    """Dense captions that name the start side among distracting side words (where it goes), and their short
    form: telling the 16 clips apart from the dense text needs the side phrase, not the bag of words."""
    out = []
    for colour, shape, side in itertools.product(COLOURS, SHAPES, SIDES):
        other = SIDES[1 - SIDES.index(side)]
        dense = (
            f"At the bottom {side}, a small {colour} {shape} rolls to the {other} and hits the {other} wall."
        )
        out.append((dense, f"a {colour} {shape} on the {side} rolls"))
    return out


def _encoder(seed=0):
    torch.manual_seed(seed)
    return WordTextEncoder(**{k: v for k, v in TEXT.items() if k != "_target_"})


def test_pretraining_makes_each_dense_caption_find_its_short_form():
    pairs = _pairs()
    encoder = _encoder()
    before = retrieval_accuracy(encoder.encode, pairs)
    losses = pretrain(encoder, pairs, steps=80, batch_size=16, lr=3e-3)
    after = retrieval_accuracy(encoder.encode, pairs)
    assert len(losses) == 80 and losses[-1] < 0.3 * losses[0]
    assert before < 0.5 and after > 0.9, (before, after)
    # the side is what was learned: the dense caption of (colour, shape, left) is nearer its own short form
    # than the (colour, shape, right) one's
    left = [(d, s) for d, s in pairs if "bottom left" in d]
    right = [(d, s) for d, s in pairs if "bottom right" in d]
    with torch.no_grad():
        from sora.training.text_align import pooled

        dense_left = pooled(encoder.encode, [d for d, _ in left])
        own = (dense_left * pooled(encoder.encode, [s for _, s in left])).sum(1)
        swapped = (dense_left * pooled(encoder.encode, [s for _, s in right])).sum(1)
    assert bool((own > swapped).all())


def test_alignment_loss_needs_pairs_and_is_lower_for_matched_ones():
    encoder = _encoder()
    pairs = _pairs()
    pretrain(encoder, pairs, steps=40, batch_size=16, lr=3e-3)
    dense, short = [d for d, _ in pairs], [s for _, s in pairs]
    with torch.no_grad():
        matched = alignment_loss(encoder.encode, dense, short, 0.1)
        shuffled = alignment_loss(encoder.encode, dense, short[1:] + short[:1], 0.1)
    assert float(matched) < float(shuffled)
    with pytest.raises(ValueError, match="pairs"):
        alignment_loss(encoder.encode, dense[:1], short[:1], 0.1)
    with pytest.raises(ValueError, match="pairs"):
        pretrain(encoder, pairs[:1], steps=1)


def test_caption_pairs_come_from_the_shards_txt_and_json_captions(world_shards):
    pairs, skipped = caption_pairs(f"{world_shards}/shard-*.tar", "short")
    assert len(pairs) == 8 and not skipped
    for dense, short in pairs:
        assert len(short.split()) < len(dense.split())
    pairs, skipped = caption_pairs(f"{world_shards}/shard-*.tar", "no_such_form")
    assert pairs == [] and skipped == {"no_txt_or_no_such_form": 8}


def test_saved_encoder_starts_the_dit_module_and_a_mismatch_is_refused(tmp_path):
    from sora.training.dit_module import AVDiTModule

    encoder = _encoder()
    pretrain(encoder, _pairs(), steps=5, batch_size=16)
    path = save(encoder, TEXT, tmp_path / "text.pt", {"steps": 5})
    dit = {"_target_": "sora.models.dit.AVDiT", "hidden_size": 32, "depth": 1, "num_heads": 2, "text_dim": 32}
    module = AVDiTModule(dit=dit, text_encoder=TEXT, text_encoder_ckpt=str(path))
    for key, value in encoder.state_dict().items():
        assert torch.equal(module.text_encoder.state_dict()[key], value), key
    assert "text_encoder_ckpt" not in module.hparams  # its weights are in the module's own checkpoints
    fresh = AVDiTModule(dit=dit, text_encoder=TEXT)
    assert not torch.equal(fresh.text_encoder.token_embed.weight, encoder.token_embed.weight)
    with pytest.raises(ValueError, match="num_heads"):
        load_into(_encoder(), {**TEXT, "num_heads": 4}, path)
    with pytest.raises(RuntimeError):  # another size: the weights do not fit
        load_into(WordTextEncoder(dim=16, depth=1, num_heads=2, max_length=32), {}, path)


def test_quickstart_aligns_the_dits_text_encoder_once(world_shards, tmp_path):
    from sora.config import compose
    from sora.quickstart import pretrain_text

    said = []
    cfg = compose(
        "quickstart", [f"out_dir={tmp_path}", "text_pretrain.steps=3", "text_pretrain.batch_size=4"]
    )
    paths = {name: tmp_path / name for name in ("world", "world_val", "vae_video", "vae_audio", "dit")}
    paths["latents"] = world_shards  # any shards with a txt and json captions
    paths["dit"].mkdir()
    path = pretrain_text(cfg, paths, said.append)
    blob = torch.load(path, weights_only=True)
    assert blob["meta"]["pairs"] == 8 and len(blob["meta"]["losses"]) == 3
    assert (
        blob["config"]["dim"]
        == compose("train", ["experiment=dit_tiny", "model.text.dim=128"]).model.text.dim
    )
    assert any("aligning the text encoder on 8" in s for s in said)
    stamp = path.stat().st_mtime_ns
    assert pretrain_text(cfg, paths, said.append) == path and path.stat().st_mtime_ns == stamp  # reused
    from sora.quickstart import stage_config

    assert stage_config(cfg, "dit", paths, None).module.text_encoder_ckpt == str(path)  # the DiT starts there
    path.unlink()
    assert stage_config(cfg, "dit", paths, None).module.text_encoder_ckpt is None
    off = compose("quickstart", [f"out_dir={tmp_path}", "text_pretrain.steps=0"])
    assert pretrain_text(off, paths, said.append) is None
    assert json.dumps(blob["meta"])  # plain data
