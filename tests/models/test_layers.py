"""Layers: norms, grouped adaLN modulation, MLPs, timestep embedding, RoPE, attention with padding masks."""

from __future__ import annotations

import pytest
import torch

from sora.models.layers import (
    MLP,
    AdaLNModulation,
    RMSNorm,
    TimestepEmbedder,
    apply_gate,
    apply_rope,
    attention,
    layer_norm,
    modulate,
    resolve_attn_backend,
    rope_1d,
    rope_axes_dims,
    rope_cos_sin,
    swiglu_hidden_dim,
)


def test_rms_norm_matches_formula_and_keeps_dtype():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(8.0))
    x = torch.randn(2, 3, 8)
    want = x / x.square().mean(-1, keepdim=True).add(1e-6).sqrt() * torch.arange(8.0)
    torch.testing.assert_close(norm(x), want)
    assert norm(x.to(torch.bfloat16)).dtype == torch.bfloat16
    assert RMSNorm(8, elementwise_affine=False).weight is None


def test_layer_norm_has_no_affine():
    assert list(layer_norm(16).parameters()) == []


def test_adaln_modulation_starts_at_zero_and_groups_broadcast():
    mod = AdaLNModulation(4, 6, 3)
    shift, scale, gate = mod(torch.randn(2, 5, 4))
    assert shift.shape == (2, 5, 6) and torch.equal(gate, torch.zeros(2, 5, 6))
    # Grouped modulation equals per-token modulation with each group's row repeated over its tokens.
    x = torch.randn(2, 12, 6)
    shift, scale, gate = torch.randn(3, 2, 3, 6).unbind(0)  # 3 groups of 4 tokens
    per_token = [v.repeat_interleave(4, dim=1) for v in (shift, scale, gate)]
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + per_token[1]) + per_token[0])
    torch.testing.assert_close(apply_gate(x, gate), x * per_token[2])


@pytest.mark.parametrize("mlp_type", ["gelu", "swiglu"])
def test_mlp_shapes_and_comparable_size(mlp_type):
    mlp = MLP(64, 256, mlp_type)
    assert mlp(torch.randn(2, 3, 64)).shape == (2, 3, 64)
    n = sum(p.numel() for n, p in mlp.named_parameters() if n.endswith("weight"))
    assert abs(n - 2 * 64 * 256) / (2 * 64 * 256) < 0.15
    assert swiglu_hidden_dim(256) % 64 == 0


def test_mlp_rejects_unknown_type():
    with pytest.raises(ValueError, match="mlp_type"):
        MLP(8, 16, "relu")


def test_timestep_embedder_any_shape():
    emb = TimestepEmbedder(32)
    assert emb(torch.rand(2)).shape == (2, 32)
    assert emb(torch.rand(2, 3, 4)).shape == (2, 3, 4, 32)
    out = emb(torch.tensor([0.0, 0.5, 0.5]))
    assert torch.equal(out[1], out[2]) and not torch.allclose(out[0], out[1])


def test_rope_axes_dims_split():
    for head_dim in (16, 32, 64, 128):
        dims = rope_axes_dims(head_dim)
        assert sum(dims) == head_dim and all(d % 2 == 0 for d in dims)
    with pytest.raises(ValueError):
        rope_axes_dims(15)


def _rotated_dot(q, k, pos_q, pos_k, axes):
    cq, sq = rope_cos_sin(pos_q, axes)
    ck, sk = rope_cos_sin(pos_k, axes)
    return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum(-1)


def test_rope_depends_only_on_relative_position():
    # q.k after RoPE is invariant to shifting both positions by the same (real-valued) offset, on every axis.
    axes = (8, 4, 4)
    q, k = torch.randn(2, 1, 1, 5, 16, dtype=torch.float64).unbind(0)
    pos_q, pos_k = torch.randn(2, 5, 3, dtype=torch.float64).mul(10).unbind(0)
    base = _rotated_dot(q, k, pos_q, pos_k, axes)
    for offset in ([3.7, 0.0, 0.0], [0.0, -2.5, 11.0], [123.25, 4.0, -7.5]):
        offset = torch.tensor(offset, dtype=torch.float64)
        torch.testing.assert_close(
            _rotated_dot(q, k, pos_q + offset, pos_k + offset, axes), base, atol=1e-4, rtol=1e-4
        )
    assert not torch.allclose(_rotated_dot(q, k, pos_q + 1.0, pos_k, axes), base)


def test_rope_1d_preserves_norm_and_position_zero_is_identity():
    x = torch.randn(1, 2, 4, 8)
    cos, sin = rope_1d(torch.tensor([0.0, 0.5, 1.0, 2.0]), 8)
    out = apply_rope(x, cos, sin)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(out[:, :, 0], x[:, :, 0])


def test_attention_key_padding_mask_ignores_padded_keys():
    q, k, v = torch.randn(3, 2, 2, 6, 8).unbind(0)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = attention(q, k, v, mask)
    torch.testing.assert_close(out[1], attention(q[1:], k[1:, :, :4], v[1:, :, :4])[0])
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 4:], v2[1, :, 4:] = 1e3, 1e3  # padded keys/values do not matter
    torch.testing.assert_close(attention(q, k2, v2, mask), out)


def test_attention_backend_selection():
    q = torch.randn(1, 1, 2, 4)
    assert resolve_attn_backend("auto", q) == "sdpa"  # CPU float32: no flash
    with pytest.raises(ValueError, match="flash"):
        resolve_attn_backend("flash", q)
    with pytest.raises(ValueError, match="attn_backend"):
        resolve_attn_backend("xformers", q)


@pytest.mark.gpu
def test_flash_attention_matches_sdpa_on_cuda():
    pytest.importorskip("flash_attn", reason="flash-attn not installed (pip install 'sora[flash]')")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    assert resolve_attn_backend("auto", q) == "flash" and resolve_attn_backend("auto", q.float()) == "sdpa"
    torch.testing.assert_close(attention(q, k, v, backend="flash"), attention(q, k, v), atol=2e-2, rtol=2e-2)
    mask = torch.ones(2, 37, dtype=torch.bool, device="cuda")
    mask[1, 20:] = False  # sample 1 has 20 real tokens: the unpadded varlen kernel
    got, want = attention(q, k, v, mask, backend="flash"), attention(q, k, v, mask, backend="sdpa")
    torch.testing.assert_close(got[0], want[0], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got[1, :, :20], want[1, :, :20], atol=2e-2, rtol=2e-2)
    assert torch.equal(got[1, :, 20:], torch.zeros_like(got[1, :, 20:]))  # padded queries: zero, never read
