"""AVDiT: shapes per conditioning mode, per-token timesteps, RoPE in seconds, CFG null text, checkpointing,
determinism, save/load, adaLN-zero init, compile, FLOPs, and a tiny overfitting run."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sora.diffusion.flow import MODES, ConditioningCurriculum, add_noise, flow_loss, velocity_target
from sora.models.dit import AVDiT, AVDiTConfig, dit_flops_per_token, estimate_flops
from sora.models.layers import AdaLNModulation

TINY = dict(
    video_channels=16,
    audio_channels=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    text_dim=16,
    attn_backend="sdpa",
)
B, T, H, W, L, N_TXT = 2, 3, 16, 16, 12, 5
FPS = 25.0
VFS = 4 / FPS  # seconds per video latent frame


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models are dominated by thread-pool overhead: on 2 shared cores 1 thread is ~10x faster than 2.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed: int = 0, **overrides) -> AVDiT:
    torch.manual_seed(seed)
    return AVDiT(**{**TINY, **overrides})


def make_nontrivial(model: AVDiT, seed: int = 1) -> AVDiT:
    """Give the zero-initialised modulations and final layers random weights, so every path is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdaLNModulation):
                module.linear.weight.copy_(torch.randn(module.linear.weight.shape, generator=g) * 0.1)
                module.linear.bias.copy_(torch.randn(module.linear.bias.shape, generator=g) * 0.1)
        for final in (model.final_video, model.final_audio):
            final.linear.weight.copy_(torch.randn(final.linear.weight.shape, generator=g) * 0.1)
    return model


def make_inputs(seed: int = 0, audio: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N_TXT, dtype=torch.bool)
    mask[1, 3:] = False
    return dict(
        video=torch.randn(B, 16, T, H, W, generator=g),
        audio=torch.randn(B, 8, L, generator=g) if audio else None,
        t_video=torch.rand(B, generator=g),
        t_audio=torch.rand(B, generator=g) if audio else None,
        text=torch.randn(B, N_TXT, 16, generator=g),
        text_mask=mask,
    )


def run(model: AVDiT, inputs: dict, **kwargs):
    return model(**inputs, video_frame_seconds=VFS, **kwargs)


def test_fresh_model_outputs_exact_zero():
    # adaLN-zero: all modulations are zero so every block is the identity, and the final projection is zero,
    # so an untouched model predicts exactly 0 velocity whatever the input.
    out_v, out_a = run(make_model(), make_inputs())
    assert torch.equal(out_v, torch.zeros_like(out_v)) and torch.equal(out_a, torch.zeros_like(out_a))


@pytest.mark.parametrize("mode", MODES)
def test_shapes_for_every_conditioning_mode(mode):
    model = make_nontrivial(make_model())
    inputs = make_inputs()
    cond = ConditioningCurriculum({mode: 1.0}).sample(torch.rand(B), T, L, torch.ones(B, dtype=torch.bool))
    inputs.update(t_video=cond.t_video, t_audio=cond.t_audio)
    out_v, out_a = run(model, inputs, drop_text=cond.drop_text)
    assert out_v.shape == inputs["video"].shape and out_a.shape == inputs["audio"].shape
    assert torch.isfinite(out_v).all() and torch.isfinite(out_a).all()


def test_video_only():
    model = make_nontrivial(make_model())
    out_v, out_a = run(model, make_inputs(audio=False))
    assert out_v.shape == (B, 16, T, H, W) and out_a is None


def test_timestep_shapes_agree_when_equal():
    model = make_nontrivial(make_model())
    inputs = make_inputs()
    t = torch.tensor([0.3, 0.8])
    outs = []
    for tv in (
        t,
        t[:, None].expand(B, T),
        t[:, None, None, None].expand(B, T, H, W),
        t[:, None, None, None].expand(B, T, H // 2, W // 2),
    ):  # per sample, frame, latent pos, token
        inputs.update(t_video=tv, t_audio=t[:, None].expand(B, L))
        outs.append(run(model, inputs))
    for out_v, out_a in outs[1:]:
        torch.testing.assert_close(out_v, outs[0][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out_a, outs[0][1], atol=1e-5, rtol=1e-5)


def _video_modulation(model: AVDiT, inputs: dict) -> torch.Tensor:
    """First block's video-stream adaLN output, expanded to one row per video token: (B, Nv, 6D)."""
    captured = {}
    hook = (
        model.blocks[0]
        .layers[1]
        .modulation.register_forward_hook(lambda mod, args, out: captured.update(out=torch.cat(out, dim=-1)))
    )
    out_v, _ = run(model, inputs)
    hook.remove()
    mod = captured["out"]  # (B, G, 6D)
    n_tokens = T * (H // 2) * (W // 2)
    return mod.repeat_interleave(n_tokens // mod.shape[1], dim=1), out_v


@pytest.mark.parametrize("per", ["frame", "token"])
def test_per_token_timesteps_condition_only_their_tokens(per):
    model = make_nontrivial(make_model())
    inputs = make_inputs()
    tv = torch.full((B, T), 0.7) if per == "frame" else torch.full((B, T, H, W), 0.7)
    inputs["t_video"] = tv
    mod_a, out_a = _video_modulation(model, inputs)
    tv = tv.clone()
    tv[:, 0] = 0.0  # frame 0 becomes a clean condition
    inputs["t_video"] = tv
    mod_b, out_b = _video_modulation(model, inputs)
    frame0 = (H // 2) * (W // 2)  # tokens are ordered (t h w): the first H'W' tokens belong to frame 0
    changed = (mod_a - mod_b).abs().amax(dim=-1)  # (B, Nv)
    assert (changed[:, :frame0] > 1e-4).all(), "frame-0 tokens must see their new timestep"
    assert torch.equal(mod_a[:, frame0:], mod_b[:, frame0:]), "other tokens' conditioning must not change"
    assert not torch.allclose(out_a, out_b), "the prediction must depend on the per-frame timestep"


def test_rope_time_is_in_seconds_for_both_modalities():
    model = make_model(rope_time_scale=25.0)
    video_pos = model._video_positions((T, H // 2, W // 2), torch.tensor([VFS]))  # (1, Nv, 3)
    audio_pos = model._audio_positions(L, torch.tensor([1 / 25]))  # (1, L, 3)
    video_time = video_pos[0, :: (H // 2) * (W // 2), 0]  # time of each latent frame
    # At 25 fps a latent frame lasts 4/25 s = 4 audio latents: video frame k and audio latent 4k share
    # a second.
    torch.testing.assert_close(video_time, audio_pos[0, ::4, 0][:T])
    torch.testing.assert_close(audio_pos[0, :, 0], torch.arange(L, dtype=torch.float32))  # 1 unit per 1/25 s
    assert torch.equal(audio_pos[0, :, 1:], torch.zeros(L, 2))  # audio at the frame's spatial centre
    assert video_pos[0, :, 1:].mean(0).abs().max() < 1e-6  # spatial positions are centred


def test_cfg_null_text_path():
    model = make_nontrivial(make_model())
    inputs = make_inputs()
    drop = torch.ones(B, dtype=torch.bool)
    out_drop, _ = run(model, inputs, drop_text=drop)
    other = {**inputs, "text": torch.randn(B, 7, 16), "text_mask": torch.ones(B, 7, dtype=torch.bool)}
    out_drop_other, _ = run(model, other, drop_text=drop)
    null_emb, null_mask = model.null_text_condition(B, 1)
    out_null, _ = run(model, {**inputs, "text": null_emb, "text_mask": null_mask})
    out_real, _ = run(model, inputs)
    torch.testing.assert_close(out_drop, out_null, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_drop_other, out_null, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out_real, out_null, atol=1e-4)
    # Dropping only sample 0 leaves sample 1 as with its caption.
    out_mixed, _ = run(model, inputs, drop_text=torch.tensor([True, False]))
    torch.testing.assert_close(out_mixed[1], out_real[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_mixed[0], out_null[0], atol=1e-5, rtol=1e-5)


def test_text_padding_is_ignored():
    model = make_nontrivial(make_model())
    inputs = make_inputs()
    out, _ = run(model, inputs)
    padded = inputs["text"].clone()
    padded[1, 3:] = 100.0  # masked positions of sample 1
    out_padded, _ = run(model, {**inputs, "text": padded})
    torch.testing.assert_close(out_padded, out, atol=1e-5, rtol=1e-5)


def test_seeded_determinism():
    inputs = make_inputs()
    out_a, _ = run(make_nontrivial(make_model(seed=3)), inputs)
    out_b, _ = run(make_nontrivial(make_model(seed=3)), inputs)
    out_c, _ = run(make_nontrivial(make_model(seed=4)), inputs)
    assert torch.equal(out_a, out_b)
    assert not torch.allclose(out_a, out_c)


def test_save_load_round_trip(tmp_path):
    model = make_nontrivial(make_model(seed=0))
    torch.save(model.state_dict(), tmp_path / "dit.pt")
    loaded = make_model(seed=1)
    loaded.load_state_dict(torch.load(tmp_path / "dit.pt", weights_only=True))
    inputs = make_inputs()
    assert torch.equal(run(model, inputs)[0], run(loaded, inputs)[0])
    assert AVDiT(**model.config).config == model.config  # the config rebuilds the same architecture


def test_single_stream_blocks_share_weights():
    model = make_model(depth=3, single_stream_depth=2)
    assert [len(b.layers) for b in model.blocks] == [3, 1, 1]


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(video=torch.randn(B, 16, T, 15, 16)), "height H=15 is not divisible"),
        (dict(video=torch.randn(B, 4, T, H, W)), "video must be"),
        (dict(t_video=torch.rand(B, T + 1)), "t_video must be"),
        (dict(t_audio=None), "t_audio is required"),
        (dict(text=torch.randn(B, N_TXT, 8)), "text must be"),
        (dict(audio=torch.randn(B, 8, L), t_audio=torch.rand(B, L + 1)), "t_audio must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, match):
    with pytest.raises(ValueError, match=match):
        run(make_model(), {**make_inputs(), **change})


def test_flash_backend_without_flash_attn_raises():
    model = make_model(attn_backend="flash")
    with pytest.raises(ValueError, match="flash"):
        run(model, make_inputs())


def _block_inputs(model: AVDiT):
    """Capture the first block's real inputs from a forward pass."""
    captured = {}

    def hook(module, args):
        captured["args"] = args

    handle = model.blocks[0].register_forward_pre_hook(hook)
    run(model, make_inputs())
    handle.remove()
    return captured["args"]


def test_block_compiles_fullgraph():
    # The eager backend traces the block with dynamo without generating code: fast, and any graph
    # break (data-dependent Python control flow) fails with fullgraph=True. The inductor variant is below.
    torch._dynamo.reset()
    model = make_nontrivial(make_model())
    args = _block_inputs(model)
    compiled = torch.compile(model.blocks[0], fullgraph=True, backend="eager")
    for got, want in zip(compiled(*args), model.blocks[0](*args)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_block_compiles_fullgraph_inductor():
    torch._dynamo.reset()
    model = make_nontrivial(make_model())
    args = _block_inputs(model)
    compiled = torch.compile(model.blocks[0], fullgraph=True)
    for got, want in zip(compiled(*args), model.blocks[0](*args)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_flops_formula_matches_parameter_count():
    # Without attention (seq_len=0) forward FLOPs per token are 2 x the matmul weights a token meets
    # per block.
    model = make_model(depth=2)
    layer = model.blocks[0].layers[1]
    weights = sum(m.weight.numel() for m in (layer.qkv, layer.proj, layer.mlp.fc1, layer.mlp.fc2))
    fwd = dit_flops_per_token(hidden_size=32, depth=2, seq_len=0, training=False)
    assert fwd == 2 * 2 * weights
    assert dit_flops_per_token(hidden_size=32, depth=2, seq_len=0) == fwd  # forward by default
    assert dit_flops_per_token(hidden_size=32, depth=2, seq_len=0, training=True) == 3 * fwd
    assert dit_flops_per_token(hidden_size=32, depth=2, seq_len=10, training=False) == fwd + 2 * 4 * 10 * 32
    nv = T * (H // 2) * (W // 2)
    total = model.estimate_flops((B, 16, T, H, W), (B, 8, L), num_text_tokens=N_TXT)
    assert total == B * estimate_flops(
        hidden_size=32, depth=2, num_video_tokens=nv, num_audio_tokens=L, num_text_tokens=N_TXT
    )


def _overfit(steps: int, lr: float) -> tuple[float, float]:
    torch.manual_seed(0)
    model = AVDiT(**{**TINY, "hidden_size": 64})
    inputs = make_inputs()
    inputs["video"] = inputs["video"][..., :8, :8]  # 48 video tokens: fast on CPU
    g = torch.Generator().manual_seed(1)
    noise_v, noise_a = (
        torch.randn(inputs["video"].shape, generator=g),
        torch.randn(inputs["audio"].shape, generator=g),
    )
    tv, ta = torch.tensor([0.3, 0.7]), torch.tensor([0.5, 0.4])
    xt_v, xt_a = add_noise(inputs["video"], noise_v, tv), add_noise(inputs["audio"], noise_a, ta)
    target = {
        "video": velocity_target(inputs["video"], noise_v),
        "audio": velocity_target(inputs["audio"], noise_a),
    }
    masks = {"video": torch.ones(B, dtype=torch.bool), "audio": torch.ones(B, dtype=torch.bool)}
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        out_v, out_a = model(xt_v, xt_a, tv, ta, inputs["text"], inputs["text_mask"], video_frame_seconds=VFS)
        loss = flow_loss({"video": out_v, "audio": out_a}, target, masks)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], min(losses[-5:])


def test_overfits_one_batch_fast():
    first, last = _overfit(steps=30, lr=3e-3)
    assert last < 0.5 * first, (first, last)


@pytest.mark.slow
def test_overfits_one_batch_10x():
    first, last = _overfit(steps=300, lr=3e-3)
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("single_stream_depth", [0, 1])
def test_parameters_are_all_used(single_stream_depth):
    # Every parameter gets a gradient in an audio+video step (no dead modules for DDP to trip on), also when
    # the last block is dual-stream (its text stream is then keys/values only).
    model = make_nontrivial(make_model(single_stream_depth=single_stream_depth))
    out_v, out_a = run(model, make_inputs(), drop_text=torch.tensor([True, False]))
    (out_v.sum() + out_a.sum()).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_module_is_plain_nn_module():
    assert isinstance(make_model(), nn.Module)


SIZES = ["tiny", "S", "B", "L", "XL"]
SIZE_FIELDS = {"hidden_size", "depth", "single_stream_depth", "num_heads"}


def _compose_dit(name: str) -> dict:
    from omegaconf import OmegaConf

    from sora.config import compose

    return OmegaConf.to_container(compose(f"model/dit/{name}").model.dit, resolve=True)


@pytest.mark.parametrize("size", SIZES)
def test_size_configs_instantiate_with_the_stated_parameter_count(size):
    from pathlib import Path

    from hydra.utils import instantiate

    path = Path(__file__).parents[2] / "conf" / "model" / "dit" / f"{size}.yaml"
    with torch.device("meta"):  # no memory, no init cost: only the architecture
        model = instantiate(_compose_dit(size))
    stated = path.read_text().split("(", 1)[1].split(";")[0].replace(",", "")  # "(1,540,293,448; counted ..."
    assert isinstance(model, AVDiT) and sum(p.numel() for p in model.parameters()) == int(stated)


@pytest.mark.parametrize("size", SIZES)
def test_size_configs_are_the_base_plus_four_numbers(size):
    base, composed = _compose_dit("base"), _compose_dit(size)
    assert set(composed) == set(base) | SIZE_FIELDS
    assert {k: v for k, v in composed.items() if k not in SIZE_FIELDS} == base
    assert set(base) - {"_target_"} <= {f.name for f in dataclasses.fields(AVDiTConfig)}


def test_config_dataclass_and_keywords_build_the_same_model():
    cfg = AVDiTConfig(hidden_size=32, depth=2, num_heads=2, text_dim=16, single_stream_depth=1)
    torch.manual_seed(0)
    a = AVDiT(cfg)
    torch.manual_seed(0)
    b = AVDiT(**cfg.to_dict())
    assert a.config == b.config and a.config["patch_size"] == [1, 2, 2] and a.hidden_size == 32
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match="not both"):
        AVDiT(cfg, depth=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'hidden'"):
        AVDiT(hidden=32, depth=2, num_heads=2, text_dim=16)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        AVDiTConfig(hidden_size=30, depth=2, num_heads=4, text_dim=16)


# ---- CUDA: the paths real runs take (python -m pytest -m gpu) ----------------------------------------------


def _to_cuda(inputs: dict) -> dict:
    return {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@pytest.mark.gpu
def test_default_auto_backend_takes_the_flash_path_on_cuda(monkeypatch):
    pytest.importorskip("flash_attn", reason="flash-attn not installed (pip install 'sora[flash]')")
    from sora.models import layers

    calls = []
    flash = layers._flash_attention
    monkeypatch.setattr(layers, "_flash_attention", lambda *a: calls.append(a[3] is not None) or flash(*a))
    assert AVDiTConfig(hidden_size=32, depth=2, num_heads=2, text_dim=16).attn_backend == "auto"
    auto = make_nontrivial(make_model(attn_backend="auto")).cuda()
    sdpa = make_nontrivial(make_model(attn_backend="sdpa")).cuda()
    inputs = _to_cuda(make_inputs())  # text_mask pads sample 1: the varlen (unpadded) kernel
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got_v, got_a = run(auto, inputs)
        assert calls == [True] * auto.depth, calls  # every block, through flash-attn, with the padding mask
        want_v, want_a = run(sdpa, inputs)
    assert len(calls) == auto.depth, "sdpa never calls flash-attn"
    torch.testing.assert_close(got_v.float(), want_v.float(), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(got_a.float(), want_a.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
def test_bf16_autocast_on_cuda_matches_fp32_and_trains_fp32_weights():
    model = make_nontrivial(make_model(attn_backend="sdpa")).cuda()
    inputs = _to_cuda(make_inputs())
    drop = torch.tensor([True, False], device="cuda")  # one caption dropped: the null text is used too
    want_v, want_a = run(model, inputs, drop_text=drop)  # fp32
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got_v, got_a = run(model, inputs, drop_text=drop)
    err = (got_v.float() - want_v).abs().max() / want_v.abs().max()
    # autocast really ran the matmuls in bf16 (not bit-equal to fp32) and stays within a few percent
    assert 0 < err < 0.05, float(err)
    torch.testing.assert_close(got_a.float(), want_a, atol=5e-2, rtol=5e-2)
    (got_v.float().square().mean() + got_a.float().square().mean()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.gpu
def test_compiled_blocks_on_cuda_match_eager_forward_and_backward():
    from sora.training.parallel import parallelize

    torch._dynamo.reset()
    eager = make_nontrivial(make_model(attn_backend="sdpa")).cuda()
    compiled = make_nontrivial(make_model(attn_backend="sdpa")).cuda()
    parallelize(compiled, compile=True)
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in compiled.blocks)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # in place: checkpoints stay loadable
    inputs = _to_cuda(make_inputs())
    outs = []
    for model in (eager, compiled):
        v, a = run(model, inputs)
        (v.square().mean() + a.square().mean()).backward()
        outs.append((v.detach(), a.detach(), model.video_embed.weight.grad.clone()))
    for got, want in zip(outs[1], outs[0]):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)


def test_spatial_embedding_is_added_to_each_token_by_its_place():
    # RoPE is relative: a video token knows its place in the frame through its angle to the text tokens at
    # the origin. The optional spatial embedding hands every token its (row, column) directly: token
    # (t, h, w) gets place[h * W' + w] on every latent frame t.
    from sora.models.layers import spatial_sincos_embedding

    model = make_model(spatial_embedding=True).eval()
    with torch.no_grad():
        model.video_embed.weight.zero_()
        model.video_embed.bias.zero_()
    seen = {}

    def keep_video_stream(module: nn.Module, args: tuple) -> None:
        seen["video"] = args[0][1].clone()  # xs = [text, video, audio]

    model.blocks[0].register_forward_pre_hook(keep_video_stream)
    with torch.no_grad():
        run(model, make_inputs())
    place = spatial_sincos_embedding(H // 2, W // 2, TINY["hidden_size"])  # patch (1, 2, 2)
    tokens = seen["video"].reshape(B, T, (H // 2) * (W // 2), -1)
    for t in range(T):
        assert torch.allclose(tokens[0, t], place, atol=1e-6)
    assert not AVDiTConfig(hidden_size=32, depth=1, num_heads=2, text_dim=16).spatial_embedding  # old ckpts


def test_spatial_embedding_is_in_fractions_of_the_frame():
    from sora.models.layers import spatial_sincos_embedding

    small, large = spatial_sincos_embedding(4, 4, 32), spatial_sincos_embedding(8, 8, 32)
    # cell (row 1, col 0) of a 4x4 grid covers the same place as cells (2..3, 0..1) of an 8x8 grid: its
    # centre is their mean position, and the embedding of the left quarter is the same vector family
    assert small.shape == (16, 32) and large.shape == (64, 32)
    col_sin = slice(16, 24)  # sin of the column coordinate: odd in the centred column, so mirrors flip sign
    assert torch.allclose(small[0, col_sin], -small[3, col_sin], atol=1e-6)
    assert torch.allclose(large[0, col_sin], -large[7, col_sin], atol=1e-6)
    assert not torch.allclose(small[0], small[3])
    with pytest.raises(ValueError, match="divisible by 4"):
        spatial_sincos_embedding(4, 4, 30)
