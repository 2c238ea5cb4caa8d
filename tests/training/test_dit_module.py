"""AV-DiT LightningModule: one step on latent batches, loss masking, checkpoints that rebuild, DDP."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from sora.checkpoint import load_torch_checkpoint
from sora.training.dit_module import AVDiTModule

DIT = {"_target_": "sora.models.dit.AVDiT", "hidden_size": 32, "depth": 2, "num_heads": 2, "text_dim": 16}
TEXT = {"_target_": "sora.models.text.ByteTextEncoder", "dim": 16, "depth": 1, "num_heads": 2}


def _batch(b=2, has_audio=(True, False)):
    return {
        "video_latent": torch.randn(b, 16, 3, 4, 4),
        "audio_latent": torch.randn(b, 8, 9),
        "has_audio": torch.tensor(has_audio),
        "caption": ["a red ball falls", "a blue box slides"][:b],
        "fps": torch.full((b,), 24.0),
    }


def _module(**kw):
    return AVDiTModule(
        dit=DIT, text_encoder=TEXT, optim={"lr": 1e-3, "warmup_steps": 0, "total_steps": 10}, **kw
    )


def test_loss_terms_and_flops():
    module = _module()
    out = module.compute_loss(_batch())
    assert set(out) >= {"loss", "loss_video", "loss_audio", "tokens_video", "tokens_audio"}
    assert torch.isfinite(out["loss"])
    # a fresh adaLN-zero model predicts 0: the loss is the target's mean square (~2 for unit latents + noise)
    assert 1.0 < float(out["loss_video"]) < 3.5
    assert module.flops_per_batch(_batch()) > 0


def test_clips_without_audio_have_no_audio_loss():
    module = _module()
    out = module.compute_loss(_batch(has_audio=(False, False)))
    assert float(out["tokens_audio"]) == 0 and float(out["loss_audio"]) == 0


def test_image_steps_train_on_first_latent_frames_only():
    module = _module(image_prob=1.0).train()
    with torch.no_grad():  # off adaLN-zero, so gradients reach every layer
        for p in module.dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    batch = _batch()
    video_flops = _module().flops_per_batch(batch)
    out = module.compute_loss(batch)
    assert module._image_step and "loss_audio" not in out
    assert float(out["tokens_video"]) == 2 * 16 * 1 * 4 * 4  # B x C x one frame x H x W
    out["loss"].backward()
    assert module.dit.video_embed.weight.grad.abs().sum() > 0
    assert module.text_encoder.token_embed.weight.grad.abs().sum() > 0  # the caption is what is learned
    assert 0 < module.flops_per_batch(batch) < 0.7 * video_flops
    # Never in eval mode, and with probability p otherwise, decided by the global step (same on every rank).
    assert not module.eval().use_image_step()
    half = _module(image_prob=0.5).train()
    draws = []
    for step in range(200):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(half), "global_step", property(lambda self, s=step: s))
            draws.append(half.use_image_step())
    assert 60 < sum(draws) < 140
    warm = _module(image_first_steps=3).train()  # a text-to-image warm-up, then video steps only
    with pytest.MonkeyPatch.context() as mp:
        for step, expected in ((0, True), (2, True), (3, False), (50, False)):
            mp.setattr(type(warm), "global_step", property(lambda self, s=step: s))
            assert warm.use_image_step() is expected
    with pytest.raises(ValueError, match="image_prob"):
        _module(image_prob=1.5)


def test_image_warm_up_can_keep_single_object_clips_only():
    module = _module(image_first_steps=2, image_first_max_objects=1).train()
    batch = {**_batch(), "meta": [{"objects": [{}]}, {"objects": [{}, {}]}]}  # one object, then two
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(module), "global_step", property(lambda self: 1))
        assert module._image_loss_mask(batch, 2)[:, 0].tolist() == [True, False]
        out = module.compute_loss(batch)
        assert module._image_step and float(out["tokens_video"]) == 1 * 16 * 4 * 4  # the first clip only
        torch.manual_seed(0)
        warm = module.compute_loss(batch)["loss"]
        torch.manual_seed(0)
        first_only = module.compute_loss({k: v[:1] for k, v in batch.items()})["loss"]
        assert torch.allclose(warm, first_only)  # the two-object clip adds nothing
        # ... and is not computed at all: the step's batch, its FLOPs and its alignment pairs are the first
        # clip's (the meta entry goes with it)
        assert module.step_batch(batch)["meta"] == [{"objects": [{}]}]
        assert module.step_batch(batch)["video_latent"].shape[0] == 1
        assert module.flops_per_batch(batch) == pytest.approx(
            module.flops_per_batch({k: v[:1] for k, v in batch.items()})
        )
        none = {**batch, "meta": [{"objects": [{}, {}]}] * 2}  # no clip within the limit: the same graph,
        assert module.step_batch(none) is none  # nothing in the loss
        assert float(module.compute_loss(none)["tokens_video"]) == 0
        assert module._image_loss_mask({**batch, "meta": [{}, {}]}, 2).all()  # no objects key: counted
        mp.setattr(type(module), "global_step", property(lambda self: 2))  # after the warm-up: every clip
        assert module._image_loss_mask(batch, 2).all()
    assert _module(image_first_steps=2).train()._image_loss_mask(batch, 2).all()  # None: every clip
    with pytest.raises(ValueError, match="image_first_max_objects"):
        _module(image_first_max_objects=0)


def test_image_warm_up_has_its_own_caption_dropout():
    """``image_first_caption_dropout`` replaces the curriculum's during the warm-up only."""
    drop_all = {"mode_probs": {"t2av": 1.0}, "caption_dropout": 1.0}
    module = _module(image_first_steps=2, image_first_caption_dropout=0.0, curriculum=drop_all).train()
    seen = []

    def spy(*args, drop_text=None, **kw):
        seen.append(drop_text.tolist())
        return real(*args, drop_text=drop_text, **kw)

    real = module.dit.forward
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module.dit, "forward", spy)
        for step in (0, 1, 2):  # two warm-up image steps, then a video step
            mp.setattr(type(module), "global_step", property(lambda self, s=step: s))
            module.compute_loss(_batch())
    assert seen[0] == seen[1] == [False, False]  # the warm-up keeps every caption
    assert seen[2] == [True, True]  # the curriculum's dropout after it
    with pytest.MonkeyPatch.context() as mp:  # None: the curriculum's dropout in the warm-up too
        plain = _module(image_first_steps=2, curriculum=drop_all).train()
        real = plain.dit.forward
        mp.setattr(plain.dit, "forward", spy)
        mp.setattr(type(plain), "global_step", property(lambda self: 0))
        plain.compute_loss(_batch())
    assert seen[3] == [True, True]
    with pytest.raises(ValueError, match="image_first_caption_dropout"):
        _module(image_first_caption_dropout=1.5)


def test_video_steps_can_take_part_of_the_batch_that_image_steps_take_whole():
    t2av = {"mode_probs": {"t2av": 1.0}, "caption_dropout": 0.0}  # every frame generated: tokens count clips
    module = _module(video_batch_size=1, image_prob=0.5, curriculum=t2av).train()
    batch = _batch()
    for step in range(40):  # image and video steps, drawn from the global step
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(module), "global_step", property(lambda self, s=step: s))
            out = module.compute_loss(batch)
        frames = 1 if module._image_step else 3
        clips = 2 if module._image_step else 1  # video steps: the first clip only
        assert float(out["tokens_video"]) == clips * 16 * frames * 4 * 4
        if not module._image_step:
            assert float(out["tokens_audio"]) == 1 * 8 * 9  # the first clip has audio
            video_flops = module.flops_per_batch(batch)
    assert video_flops == pytest.approx(_module().flops_per_batch({k: v[:1] for k, v in batch.items()}))
    module.eval()
    assert float(module.compute_loss(batch)["tokens_video"]) == 1 * 16 * 3 * 4 * 4  # validation: video steps
    with pytest.raises(ValueError, match="video_batch_size"):
        _module(video_batch_size=0)


def _align_batch():
    """Four clips: two trained on their txt (partner: captions['short']), one on its short form (partner:
    the txt it replaced), one with no other form (no pair)."""
    batch = _batch(b=2)
    batch = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    batch["caption"] = [
        "A big red ball at the top left drops.",
        "a blue box on the right slides",
        "x y",
        "no form",
    ]
    batch["meta"] = [
        {"captions": {"short": "a red ball on the left falls"}},
        {"caption_form": "short", "caption_txt": "A blue box in the lower right glides.", "captions": {}},
        {"caption_form": "txt", "captions": {"short": "a green ball in the middle"}},
        {},
    ]
    return batch


def test_text_align_pairs_each_caption_with_another_form_of_its_clip():
    module = _module(text_align={"weight": 0.5})
    ours, theirs = module.text_align_pairs(_align_batch())
    assert ours == ["A big red ball at the top left drops.", "a blue box on the right slides", "x y"]
    assert theirs == [
        "a red ball on the left falls",
        "A blue box in the lower right glides.",
        "a green ball in the middle",
    ]


def test_text_align_loss_is_the_symmetric_infonce_of_pooled_encodings():
    module = _module(text_align={"weight": 0.5, "temperature": 0.5})
    batch = _align_batch()
    ours, theirs = module.text_align_pairs(batch)
    # Stand-in encodings: the partner of pair i is pooled to e_i, the caption to e_i + a little of e_(i+1).
    eye = torch.eye(3)
    code = {c: eye[i] + 0.3 * eye[(i + 1) % 3] for i, c in enumerate(ours)} | {
        c: eye[i] for i, c in enumerate(theirs)
    }

    def encode(captions):  # two real tokens with the same vector, one masked token that must not count
        emb = torch.stack([torch.stack([code[c], code[c], 100 * torch.ones(3)]) for c in captions])
        return emb, torch.tensor([[True, True, False]] * len(captions))

    module.encode_text = encode
    a = torch.nn.functional.normalize(torch.stack([code[c] for c in ours]), dim=-1)
    b = torch.nn.functional.normalize(torch.stack([code[c] for c in theirs]), dim=-1)
    logits = a @ b.T / 0.5
    expected = 0.5 * sum(-torch.log_softmax(m, dim=1).diagonal().mean() for m in (logits, logits.T))
    assert float(module.text_align_loss(batch)) == pytest.approx(float(expected), rel=1e-5)
    # matched pairs cost less than mismatched ones (the sign of the logits)
    code.update({c: eye[(i + 1) % 3] for i, c in enumerate(theirs)})
    assert float(module.text_align_loss(batch)) > float(expected) + 0.5


def test_text_align_reuses_the_steps_caption_encodings_and_encodes_only_the_partners():
    batch = {k: v[-1:] + v[:-1] if isinstance(v, list) else v for k, v in _align_batch().items()}
    assert batch["meta"][0] == {}  # the clip without a partner first: the pairs are rows 1..3 of the step's
    module = _module(text_align={"weight": 0.5}).train()
    fresh = module.text_align_loss(batch)  # no step yet: every caption encoded here
    seen = []
    real = module.encode_text

    def spy(captions):
        seen.append(list(captions))
        return real(captions)

    module.encode_text = spy
    module.compute_loss(batch)
    assert seen == [batch["caption"]]  # the step encodes its captions once
    reused = module.text_align_loss(batch, module._step_text)
    ours, theirs = module.text_align_pairs(batch)
    assert seen[1:] == [theirs]  # ... and the alignment only the partners
    assert float(reused) == pytest.approx(float(fresh), rel=1e-5)  # the same rows of the same encoding
    reused.backward()
    assert module.text_encoder.token_embed.weight.grad.abs().sum() > 0
    other = {**batch, "caption": [c + " now" for c in batch["caption"]]}  # not the step's batch: encoded anew
    module.text_align_loss(other, module._step_text)
    assert seen[-1] == [*[c + " now" for c in ours], *theirs]
    module.text_align_loss(batch)  # no step's encodings given: all anew
    assert seen[-1] == [*ours, *theirs]
    seen.clear()
    module.training_step(batch, 0)  # the training step passes its own
    assert seen == [batch["caption"], theirs] and module._step_text is None


def test_text_align_adds_its_weighted_loss_and_trains_the_text_encoder_only():
    batch = _align_batch()
    torch.manual_seed(0)
    off = _module()
    torch.manual_seed(0)
    on = _module(text_align={"weight": 0.5})
    assert off.text_align_loss(batch) is None
    torch.manual_seed(1)
    base = off.compute_loss(batch)["loss"]
    torch.manual_seed(1)
    total = on.training_step(batch, 0)
    align = on.text_align_loss(batch)
    assert float(total) == pytest.approx(float(base) + 0.5 * float(align), rel=1e-5)
    # the pairs are the clips the step trained on: a video step on the first two clips aligns those two
    torch.manual_seed(0)
    part = _module(text_align={"weight": 0.5}, video_batch_size=2)
    first_two = {k: v[:2] for k, v in batch.items()}
    torch.manual_seed(1)
    base2 = part.compute_loss(first_two)["loss"]
    torch.manual_seed(1)
    total2 = part.training_step(batch, 0)
    assert float(total2) == pytest.approx(
        float(base2) + 0.5 * float(part.text_align_loss(first_two)), rel=1e-5
    )
    assert float(part.text_align_loss(first_two)) != pytest.approx(float(part.text_align_loss(batch)))
    align.backward()
    assert on.text_encoder.token_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in on.dit.parameters())
    # a few steps on the alignment alone make each caption's encoding find its partner among the others
    opt = torch.optim.Adam(on.text_encoder.parameters(), lr=1e-2)
    first = float(on.text_align_loss(batch))
    for _ in range(30):
        opt.zero_grad()
        on.text_align_loss(batch).backward()
        opt.step()
    assert float(on.text_align_loss(batch)) < 0.5 * first
    with pytest.raises(ValueError, match="text_align"):
        _module(text_align={"weight": -1.0})
    with pytest.raises(ValueError, match="unknown"):
        _module(text_align={"wieght": 1.0})


def test_text_dim_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="text_dim"):
        AVDiTModule(dit={**DIT, "text_dim": 8}, text_encoder=TEXT)


def test_training_steps_write_a_checkpoint_that_rebuilds(tmp_path):
    from sora.training.ema import EMA

    module = _module(flow={"shift": 3.0, "logit_mean": 0.5, "audio_weight": 0.5})  # not the defaults
    data = [_batch() for _ in range(4)]
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EMA(0.9)],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))
    trainer.save_checkpoint(tmp_path / "dit.ckpt")
    ckpt = load_torch_checkpoint(tmp_path / "dit.ckpt")  # weights_only: nothing but tensors and plain data
    assert ckpt["hyper_parameters"]["dit"]["_target_"] == "sora.models.dit.AVDiT"
    assert any(k.startswith("dit.") for k in ckpt["ema_state_dict"])
    rebuilt = AVDiTModule.load_from_checkpoint(tmp_path / "dit.ckpt", weights_only=True)
    assert rebuilt.hparams.flow == module.hparams.flow
    rebuilt_state, state = rebuilt.state_dict(), module.state_dict()
    assert set(rebuilt_state) == set(state) and any(k.startswith("text_encoder.") for k in state)
    for name, value in state.items():  # DiT, the text encoder trained with it, the frozen VAEs
        assert torch.equal(rebuilt_state[name], value), name
    module.train(), rebuilt.train()
    torch.manual_seed(0)
    a = rebuilt.compute_loss(_batch())
    torch.manual_seed(0)
    b = module.compute_loss(_batch())
    # same weights, hyper-parameters and seed: the same noise, timesteps and loss, bit for bit
    assert torch.isfinite(a["loss"]) and torch.equal(a["loss"], b["loss"])
    assert torch.equal(a["loss_audio"], b["loss_audio"]) and torch.equal(a["loss_video"], b["loss_video"])
    torch.manual_seed(1)
    assert not torch.equal(module.compute_loss(_batch())["loss"], b["loss"]), "the seed drives the loss"


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path):
    script = Path(__file__).with_name("ddp_dit_check.py")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (tmp_path / "rank0.txt").read_text(), (tmp_path / "rank1.txt").read_text()
    assert r0 == r1 and r0.endswith(" 2"), (r0, r1)


@pytest.mark.gpu
def test_train_steps_on_cuda_in_bf16_mixed_precision(tmp_path):
    from sora.training.ema import EMA

    class Devices(L.Callback):
        """Where the weights are while it trains: Lightning moves them back to the CPU when fit() ends."""

        def __init__(self) -> None:
            self.seen: set[str] = set()

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            self.seen |= {p.device.type for p in pl_module.parameters()}

    module, devices = _module(), Devices()
    before = {k: v.clone() for k, v in module.dit.state_dict().items()}
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EMA(0.9), devices],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, torch.utils.data.DataLoader([_batch() for _ in range(4)], batch_size=None))
    assert trainer.global_step == 3 and devices.seen == {"cuda"}, devices.seen
    assert all(p.dtype == torch.float32 for p in module.dit.parameters())  # bf16 compute, fp32 weights
    moved = [k for k, v in module.dit.state_dict().items() if not torch.equal(v.cpu(), before[k])]
    assert "final_video.linear.weight" in moved, "the optimizer stepped on the GPU"
    module.cuda().eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = module.compute_loss({k: v.cuda() if torch.is_tensor(v) else v for k, v in _batch().items()})
    assert torch.isfinite(out["loss"])
    trainer.save_checkpoint(tmp_path / "gpu.ckpt")
    rebuilt = AVDiTModule.load_from_checkpoint(tmp_path / "gpu.ckpt", map_location="cpu", weights_only=True)
    for (name, p1), (_, p2) in zip(rebuilt.dit.named_parameters(), module.dit.named_parameters()):
        assert torch.equal(p1, p2.cpu()), name


def test_image_audio_generates_the_clips_sound_beside_the_image():
    """image_audio: a text-to-image step also generates the whole clip's audio latent (noised, in the loss,
    clips without sound left out); without it the audio goes in as one clean instant with no loss."""
    torch.manual_seed(0)
    batch = _batch(has_audio=(True, False))
    plain = _module(image_prob=1.0).train()
    assert "loss_audio" not in plain.compute_loss(batch)
    module = _module(image_prob=1.0, image_audio=True).train()
    seen = {}
    forward = module.dit.forward

    def spy(video, audio, t_video, t_audio, *args, **kw):
        seen.update(audio=audio, t=t_video, t_audio=t_audio)
        return forward(video, audio, t_video, t_audio, *args, **kw)

    module.dit.forward = spy
    with torch.no_grad():
        for p in module.dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    out = module.compute_loss(batch)
    assert module._image_step
    assert tuple(seen["audio"].shape) == (2, 8, 9)  # the whole clip's sound, not the first instant
    assert torch.equal(seen["t_audio"], seen["t"].expand(2, 9))  # at the image's noise level
    assert not torch.allclose(seen["audio"], batch["audio_latent"])  # noised
    assert float(out["tokens_audio"]) == 8 * 9  # only the clip that has sound
    assert float(out["tokens_video"]) == 2 * 16 * 4 * 4
    assert float(out["loss"]) == pytest.approx(float(out["loss_video"] + out["loss_audio"]), rel=1e-5)
    out["loss"].backward()
    assert module.dit.final_audio.linear.weight.grad.abs().sum() > 0
