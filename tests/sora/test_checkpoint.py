"""sora.checkpoint: only the project's own networks are built from configs; weights round trip."""

import pytest
import torch
from omegaconf import OmegaConf

from sora import checkpoint


def test_refuses_targets_off_the_allowlist():
    with pytest.raises(ValueError, match="refusing to build 'os.system'"):
        checkpoint.build_module({"_target_": "os.system", "command": "echo pwned"})
    with pytest.raises(ValueError, match="no _target_"):
        checkpoint.build_module({"hidden": 3})


def test_builds_an_allowed_target(monkeypatch):
    monkeypatch.setattr(checkpoint, "ALLOWED_TARGETS", frozenset({"torch.nn.Linear"}))
    cfg = OmegaConf.create({"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 2})
    layer = checkpoint.build_module(cfg, bias=False)
    assert isinstance(layer, torch.nn.Linear) and layer.bias is None
    assert checkpoint.config_hash(cfg) == checkpoint.config_hash(dict(cfg))
    assert checkpoint.config_hash(cfg) != checkpoint.config_hash({**cfg, "in_features": 4})


def test_safetensors_and_ckpt_round_trip(tmp_path):
    layer = torch.nn.Linear(4, 3)
    path = checkpoint.save_safetensors(layer, tmp_path / "w.safetensors", metadata={"k": "v"})
    state = checkpoint.load_safetensors(path)
    assert torch.equal(state["weight"], layer.weight)
    torch.save(
        {"state_dict": {"dit.weight": layer.weight.detach(), "other.x": torch.ones(1)}}, tmp_path / "a.ckpt"
    )
    ckpt = checkpoint.load_torch_checkpoint(tmp_path / "a.ckpt")
    assert list(checkpoint.sub_state_dict(ckpt["state_dict"], "dit")) == ["weight"]
    with pytest.raises(FileNotFoundError):
        checkpoint.load_torch_checkpoint(tmp_path / "missing.ckpt")
