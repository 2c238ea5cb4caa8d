"""CausalVideoVAE: shapes, causality, chunked == whole, tiling, gradients, save/load, latent stats, losses."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from sora.models.discriminator import PatchDiscriminator3D
from sora.models.distributions import DiagonalGaussian
from sora.models.video_vae import CausalVideoVAE, ResBlock3d, _tiled
from sora.training.vae_loss import VideoVAELoss

CONF = Path(__file__).resolve().parents[2] / "conf" / "model" / "vae"
# Smaller than conf/model/vae/video_tiny.yaml so the whole file runs in seconds; same structure (8x / 4x).
SMALL = dict(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, patch_size=2)


def make_vae(**overrides) -> CausalVideoVAE:
    """A VAE whose residual branches are live: a fresh one zero-initialises them (each block is its skip
    path), which would let causality / chunking bugs in the 3x3x3 convs go unseen."""
    torch.manual_seed(0)
    m = CausalVideoVAE(**{**SMALL, **overrides}).eval()
    for block in m.modules():
        if isinstance(block, ResBlock3d):
            block.conv2.conv.reset_parameters()
    return m


@pytest.fixture(scope="module")
def vae() -> CausalVideoVAE:
    return make_vae()


def clip(t: int, h: int = 16, w: int = 24, b: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(t * 1000 + h + w)) * 2 - 1


@pytest.mark.parametrize("t,h,w", [(1, 16, 16), (5, 32, 48), (9, 24, 16), (17, 16, 40)])
def test_shapes(vae, t, h, w):
    assert (vae.temporal_compression, vae.spatial_compression, vae.latent_channels) == (4, 8, 16)
    x = clip(t, h, w, b=2)
    with torch.no_grad():
        post = vae.encode(x)
        assert post.mean.shape == post.logvar.shape == (2, 16, *vae.latent_shape(t, h, w))
        assert vae.latent_shape(t, h, w) == (1 + (t - 1) // 4, h // 8, w // 8)
        assert vae.decode(post.mean).shape == x.shape
        recon, posterior = vae(x)
    assert recon.shape == x.shape and isinstance(posterior, DiagonalGaussian)


def test_bad_shapes_raise_clear_errors(vae):
    with pytest.raises(ValueError, match="1 \\+ 4 \\* k.*got 4"):
        vae.encode(clip(4))
    with pytest.raises(ValueError, match="multiples of 8, got 20x48"):
        vae.encode(clip(5, 20, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\), got \(1, 3, 32, 48\)"):
        vae.encode(torch.zeros(1, 3, 32, 48))
    with pytest.raises(ValueError, match=r"\(B, 16, t, h, w\), got \(1, 8, 2, 4, 4\)"):
        vae.decode(torch.zeros(1, 8, 2, 4, 4))
    with pytest.raises(ValueError, match="temporal_compression"):
        CausalVideoVAE(**{**SMALL, "temporal_compression": 3})
    with pytest.raises(ValueError, match="temporal_compression.*got 8"):
        CausalVideoVAE(**{**SMALL, "temporal_compression": 8})  # only two downsampling levels
    with pytest.raises(ValueError, match="chunk_frames"):
        vae.encode_chunked(clip(5), 0)


def test_image_mode_without_temporal_compression():
    m = make_vae(temporal_compression=1)
    with torch.no_grad():
        post = m.encode(clip(3, 16, 16))
        assert post.mean.shape == (1, 16, 3, 2, 2)
        assert m.decode(post.mean).shape == (1, 3, 3, 16, 16)


def test_encoder_is_causal(vae):
    x = clip(17)
    with torch.no_grad():
        full = vae.encode(x).mean
        for k in range(4):
            prefix = vae.encode(x[:, :, : 1 + 4 * k]).mean
            torch.testing.assert_close(prefix, full[:, :, : 1 + k], atol=1e-5, rtol=1e-5)


def test_decoder_is_causal(vae):
    z = torch.randn(1, 16, 5, 2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = vae.decode(z)
        for k in range(4):
            torch.testing.assert_close(
                vae.decode(z[:, :, : 1 + k]), full[:, :, : 1 + 4 * k], atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 16, 20])
def test_chunked_encode_equals_whole(vae, chunk):
    x = clip(17)
    with torch.no_grad():
        whole, chunked = vae.encode(x), vae.encode_chunked(x, chunk)
    torch.testing.assert_close(chunked.mean, whole.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.logvar, whole.logvar, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 6])
def test_chunked_decode_equals_whole(vae, chunk):
    z = torch.randn(1, 16, 5, 2, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(vae.decode_chunked(z, chunk), vae.decode(z), atol=1e-5, rtol=1e-5)


def test_blending_is_a_bounded_linear_ramp():
    """If every tile is off by at most eps, the blend is off by at most eps and crosses seams gradually."""
    x = torch.zeros(1, 1, 1, 8, 40)
    counter = iter(range(100))
    eps = 0.3

    def fn(tile: torch.Tensor) -> torch.Tensor:  # per-pixel op (x8 upsampling) plus a per-tile error
        offset = eps if next(counter) % 2 else -eps
        return tile.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1) + offset

    out = _tiled(fn, x, tile=16, overlap=8, up=8, down=1)  # 4 tiles along width
    assert out.shape == (1, 1, 1, 64, 320)
    assert float(out.abs().max()) <= eps + 1e-6
    steps = (out[..., 1:] - out[..., :-1]).abs().max()
    assert float(steps) <= 2 * eps / (8 * 8 + 1) + 1e-6  # ramps of overlap * 8 output pixels, no hard seam


def test_tiled_encode_decode(vae):
    x = clip(1, 48, 48)
    with torch.no_grad():
        post = vae.encode(x)
        z = post.mean
        rec = vae.decode(z)
        # a tile covering the whole frame is exactly the untiled result
        torch.testing.assert_close(vae.tiled_encode(x, 48, 16).mean, post.mean)
        torch.testing.assert_close(vae.tiled_decode(z, 48, 16), rec)
        errors = []
        for tile in (24, 32):
            tiled_rec = vae.tiled_decode(z, tile, 8)
            tiled_mean = vae.tiled_encode(x, tile, 8).mean
            assert tiled_rec.shape == rec.shape and tiled_mean.shape == post.mean.shape
            assert torch.isfinite(tiled_rec).all() and torch.isfinite(tiled_mean).all()
            errors.append(float((tiled_rec - rec).abs().mean()))
            # Random weights give tiles little in common with the whole frame (huge receptive fields,
            # per-tile GroupNorm statistics), so only weight-independent bounds are asserted here: blending
            # adds no hard seam (no column-to-column jump beyond the untiled output's largest one) ...
            jump = (tiled_rec[..., 1:] - tiled_rec[..., :-1]).abs().max()
            assert float(jump) <= 1.25 * float((rec[..., 1:] - rec[..., :-1]).abs().max())
        assert errors[1] < errors[0]  # ... and bigger tiles give a smaller error
        z = vae.encode(clip(5, 16, 24)).mean
        chunked_tiled = vae.tiled_decode(z, 16, 8, chunk_latents=1)
        torch.testing.assert_close(chunked_tiled, vae.tiled_decode(z, 16, 8), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="tile_size=30"):
        vae.tiled_decode(z, 30, 8)


def test_gradients_are_finite_and_reach_every_parameter():
    m = make_vae().train()
    loss_fn = VideoVAELoss(kl_weight=1e-3)
    x = clip(5)
    recon, post = m(x, generator=torch.Generator().manual_seed(0))
    loss, logs = loss_fn(x, recon, post)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    assert set(logs) >= {"rec", "kl", "loss"}


def test_state_dict_round_trip_with_latent_stats(vae):
    vae.set_latent_stats(torch.linspace(-1, 1, 16), torch.linspace(0.5, 2, 16))
    try:
        state = vae.state_dict()
        assert "latent_mean" in state and "latent_std" in state
        other = CausalVideoVAE(**SMALL).eval()  # different random init
        other.load_state_dict(state)
        x = clip(5)
        with torch.no_grad():
            z = vae.normalize_latents(vae.encode(x).mean)
            torch.testing.assert_close(other.normalize_latents(other.encode(x).mean), z, atol=0, rtol=0)
            torch.testing.assert_close(
                other.decode(other.denormalize_latents(z)), vae.decode(vae.denormalize_latents(z))
            )
    finally:
        vae.set_latent_stats(torch.zeros(16), torch.ones(16))


def test_normalize_denormalize_are_inverse(vae):
    z = torch.randn(2, 16, 3, 4, 4)
    assert torch.equal(vae.normalize_latents(z), z)  # identity by default
    vae.set_latent_stats(torch.randn(16), torch.rand(16) + 0.1)
    try:
        torch.testing.assert_close(vae.denormalize_latents(vae.normalize_latents(z)), z)
    finally:
        vae.set_latent_stats(torch.zeros(16), torch.ones(16))


def test_sampling_is_deterministic_with_a_seed(vae):
    x = clip(5)
    with torch.no_grad():
        a, _ = vae(x, generator=torch.Generator().manual_seed(3))
        b, _ = vae(x, generator=torch.Generator().manual_seed(3))
        c, _ = vae(x, sample_posterior=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bf16_autocast_runs(vae):
    x = clip(5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        recon, post = vae(x, sample_posterior=False)
        chunked = vae.decode_chunked(vae.encode_chunked(x, 3).mean, 1)
    with torch.no_grad():
        ref, _ = vae(x, sample_posterior=False)
    assert recon.dtype == torch.bfloat16 and torch.isfinite(recon.float()).all()
    assert float((recon.float() - ref).abs().mean()) < 0.05
    assert chunked.shape == x.shape


def test_loss_kl_of_standard_normal_is_zero_and_charbonnier():
    x = clip(5)
    post = DiagonalGaussian(torch.zeros(1, 16, 2, 4, 6), torch.zeros(1, 16, 2, 4, 6))
    loss, logs = VideoVAELoss(kl_weight=1.0)(x, x.clone(), post)
    assert abs(float(logs["kl"])) < 1e-7 and abs(float(loss)) < 1e-7
    loss, _ = VideoVAELoss(recon_loss="charbonnier", charbonnier_eps=1e-3)(x, x + 0.5, post)
    assert abs(float(loss) - (0.25 + 1e-6) ** 0.5) < 1e-4
    with pytest.raises(ValueError, match="recon_loss"):
        VideoVAELoss(recon_loss="l2")


def test_patchgan_path_and_adaptive_weight():
    m = make_vae().train()
    loss_fn = VideoVAELoss(disc_weight=0.5, disc_start_step=10, disc_base_channels=8, disc_num_layers=2)
    x = clip(5)
    recon, post = m(x)
    _, logs = loss_fn(x, recon, post, step=0, last_layer=m.last_layer)
    assert "d_weight" not in logs  # before disc_start_step
    loss, logs = loss_fn(x, recon, post, step=10, last_layer=m.last_layer)
    assert torch.isfinite(logs["d_weight"]) and float(logs["d_weight"]) > 0
    loss.backward()
    assert torch.isfinite(m.last_layer.grad).all()
    d_loss, d_logs = loss_fn.discriminator_loss(x, recon, step=10)
    d_loss.backward()
    assert torch.isfinite(d_loss) and all(torch.isfinite(v) for v in d_logs.values())
    assert all(p.grad is not None for p in loss_fn.discriminator.parameters())
    assert float(loss_fn.discriminator_loss(x, recon, step=0)[0].detach()) == 0.0
    logits = PatchDiscriminator3D(base_channels=8, num_layers=2)(torch.zeros(2, 3, 1, 32, 32))
    assert logits.shape == (2, 1, 1, 8, 8)  # images are valid discriminator input
    with pytest.raises(ValueError, match="disc_weight"):
        VideoVAELoss().discriminator_loss(x, recon)


def test_perceptual_hook():
    with pytest.raises(ValueError, match="lpips_weights_path"):
        VideoVAELoss(perceptual_weight=1.0)

    class L1Distance(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().mean(dim=(1, 2, 3))

    x = clip(9)
    post = DiagonalGaussian(torch.zeros(1, 16, 3, 4, 6), torch.zeros(1, 16, 3, 4, 6))
    _, logs = VideoVAELoss(perceptual_weight=1.0, perceptual_module=L1Distance())(x, x + 0.25, post)
    assert abs(float(logs["perceptual"]) - 0.25) < 1e-5


@pytest.mark.parametrize("name", ["video_tiny", "video_base"])
def test_configs_instantiate(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    with torch.device("meta"):  # no allocation for the base model
        m = instantiate(cfg)
    assert isinstance(m, CausalVideoVAE)
    assert (m.temporal_compression, m.spatial_compression, m.latent_channels) == (4, 8, 16)


def test_fresh_blocks_are_identity_and_shortcuts_are_optional():
    fresh = CausalVideoVAE(**SMALL)
    block = next(b for b in fresh.modules() if isinstance(b, ResBlock3d) and b.skip is None)
    x = clip(5).repeat(1, 3, 1, 1, 1)[:, :8]  # (1, 8, 5, 16, 24): the block's width
    torch.testing.assert_close(block(x), x)
    assert fresh.encoder.shortcut is not None and fresh.decoder.shortcut is not None
    plain = CausalVideoVAE(**SMALL, shortcut=False)
    assert plain.encoder.shortcut is None and plain.decoder.shortcut is None
    assert plain(clip(5))[0].shape == (1, 3, 5, 16, 24)


def test_group_norm_keeps_several_channels_per_group():
    groups = {m.norm.num_channels: m.norm.num_groups for m in make_vae().modules() if hasattr(m, "norm")}
    assert groups == {8: 1, 16: 2}  # never one channel per group (instance norm erases flat colours)


def test_tiny_config_runs():
    m = instantiate(OmegaConf.load(CONF / "video_tiny.yaml")).eval()
    with torch.no_grad():
        recon, post = m(clip(5, 64, 64))
    assert recon.shape == (1, 3, 5, 64, 64) and post.mean.shape == (1, 16, 2, 8, 8)
