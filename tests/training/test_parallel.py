"""sora.training.parallel: the fixed-order helpers keep outputs and state_dict keys; FSDP strategy builds."""

import pytest
import torch

from sora.config import compose
from sora.models.dit import AVDiT
from sora.training.parallel import apply_activation_checkpointing_and_compile, fsdp_strategy, repeated_blocks


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 16, 2, 4, 4, generator=g),
        torch.randn(2, 8, 6, generator=g),
        torch.rand(2, generator=g),
        torch.rand(2, generator=g),
        torch.randn(2, 3, 16, generator=g),
        torch.ones(2, 3, dtype=torch.bool),
    )


def _model():
    torch.manual_seed(0)
    model = AVDiT(hidden_size=32, depth=2, num_heads=2, text_dim=16)
    with torch.no_grad():  # leave adaLN-zero so the outputs (and gradients) are non-trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_checkpointing_keeps_outputs_grads_and_keys():
    plain, wrapped = _model(), _model()
    apply_activation_checkpointing_and_compile(wrapped, activation_checkpointing=True)
    assert wrapped.gradient_checkpointing and list(plain.state_dict()) == list(wrapped.state_dict())
    outs = []
    for model in (plain, wrapped):
        v, a = model(*_inputs(), video_frame_seconds=4 / 24)
        (v.square().mean() + a.square().mean()).backward()
        outs.append((v, [p.grad for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    assert len(outs[0][1]) == len(outs[1][1]) > 10
    for g1, g2 in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g1, g2)


def test_compile_is_in_place_per_block():
    model = _model()
    keys = list(model.state_dict())
    apply_activation_checkpointing_and_compile(model, compile=True)
    assert len(repeated_blocks(model)) == 2 and list(model.state_dict()) == keys
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        apply_activation_checkpointing_and_compile(torch.nn.Linear(2, 2), activation_checkpointing=True)


def test_fsdp_strategy_from_the_trainer_config():
    cfg = compose("train", ["experiment=dit_tiny", "trainer=fsdp"])
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import FSDPStrategy

    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    with pytest.raises(ValueError, match="not found"):
        fsdp_strategy(block_class_names=["sora.models.dit.NoSuchBlock"])
    with pytest.raises(ValueError, match="dtypes"):
        fsdp_strategy(param_dtype="int8")
