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


# ---- a URL is never unpickled -----------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


@pytest.fixture
def payload_server(tmp_path):
    """An http server on 127.0.0.1 serving a pickle payload at every path; yields (url, marker, requests)."""
    import http.server
    import pickle
    import threading

    marker = tmp_path / "PWNED"
    body = pickle.dumps(_Payload(marker))
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/x.ckpt", marker, requests
    finally:
        server.shutdown()
        server.server_close()


def test_train_refuses_a_url_ckpt_path_and_the_payload_never_runs(
    payload_server, latent_shards, tmp_path, monkeypatch
):
    """The probe of issue 19: ``train.py ckpt_path=http://HOST/x.ckpt`` with a real experiment and data
    (without the guard, Lightning downloads the file and unpickles it with weights_only=False)."""
    import train

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # where torch.hub would download it
    from sora.config import compose

    url, marker, requests = payload_server
    cfg = compose(
        "train",
        [
            "experiment=dit_tiny",
            "trainer=cpu",
            "trainer.max_steps=1",
            "logger=csv",
            f"out_dir={tmp_path / 'run'}",
            "callbacks.samples=null",
            "module.compile=false",
            f"data.train_urls={latent_shards}/shard-*.tar",
            "data.batch_size=2",
            "data.max_tokens=null",
            "data.num_workers=0",
            "data.resampled=false",
            "data.epoch_samples=null",
            f"+ckpt_path={url}",
        ],
    )
    with pytest.raises(ValueError, match=r"refusing to load a checkpoint \(ckpt_path\) from a URL"):
        train.run(cfg)
    assert not marker.exists() and requests == []


def test_loaders_refuse_urls(payload_server):
    from sora.pipeline import AVPipeline

    url, marker, requests = payload_server
    with pytest.raises(ValueError, match="from a URL"):
        checkpoint.load_torch_checkpoint(url)
    with pytest.raises(ValueError, match="refusing to load a model from a URL"):
        AVPipeline.from_pretrained(url)
    assert not marker.exists() and requests == []
    assert checkpoint.is_remote("s3://bucket/x.ckpt") and not checkpoint.is_remote("outputs/x.ckpt")


# ---- sizes are bounded before anything is allocated -------------------------------------------------------

DIT = {"_target_": "sora.models.dit.AVDiT", "hidden_size": 32, "depth": 2, "num_heads": 2, "text_dim": 16}
VAE = {"_target_": "sora.models.video_vae.CausalVideoVAE", "base_channels": 8, "channel_mult": [1, 2]}
WORD = {"_target_": "sora.models.text.WordTextEncoder", "dim": 16, "depth": 1, "num_heads": 2}


@pytest.mark.parametrize(
    "config,field",
    [
        ({**DIT, "depth": 100_000}, "depth=100000"),
        ({**DIT, "hidden_size": 1 << 20}, "hidden_size=1048576"),
        ({**DIT, "num_heads": 100_000}, "num_heads=100000"),
        ({**DIT, "patch_size": [1, 2, 100_000]}, r"patch_size\[2\]=100000"),
        ({**DIT, "mlp_ratio": 1e6}, "mlp_ratio=1000000.0"),
        ({**DIT, "depth": "100000"}, "depth must be a number"),
        ({**DIT, "depth": -1}, "depth=-1 must not be negative"),
        ({**VAE, "base_channels": 1 << 20}, "base_channels=1048576"),
        ({**VAE, "channel_mult": [1, 100_000]}, r"channel_mult\[1\]=100000"),
        ({**VAE, "channel_mult": [1] * 1000}, "channel_mult has 1000 entries"),
        ({**WORD, "max_length": 1 << 30}, "max_length=1073741824"),
        ({**WORD, "vocab_size": 1 << 30}, "vocab_size=1073741824"),
        ({"_target_": "sora.models.audio_vae.AudioVAE", "n_mels": 1 << 20}, "n_mels=1048576"),
    ],
)
def test_config_sizes_are_bounded_before_building(config, field):
    with pytest.raises(ValueError, match=f"network {config['_target_']}: {field}"):
        checkpoint.build_module(config)
    with pytest.raises(ValueError, match=field):
        checkpoint.load_network(config, {})


def test_empty_build_puts_parameters_on_meta():
    """A 4.6 billion parameter DiT (18 GB in float32) is built in an instant and holds no memory."""
    big = {**DIT, "hidden_size": 4096, "depth": 24, "num_heads": 32, "text_dim": 4096}
    net = checkpoint.build_module(big, empty=True)
    params = list(net.parameters())
    assert sum(p.numel() for p in params) > 4e9 and all(p.is_meta for p in params)


# ---- the one loader checks every tensor before reading it -------------------------------------------------


@pytest.fixture
def word_weights(tmp_path):
    torch.manual_seed(0)
    net = checkpoint.build_module(WORD)
    return net, checkpoint.save_safetensors(net, tmp_path / "w.safetensors")


def test_load_network_reads_weights_into_the_network_once(word_weights):
    net, path = word_weights
    loaded = checkpoint.load_network(WORD, path)
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assigned = checkpoint.load_network(WORD, state, copy=False)
    assert assigned.token_embed.weight.data_ptr() == state["token_embed.weight"].data_ptr()  # no copy
    copied = checkpoint.load_network(WORD, state)
    assert copied.token_embed.weight.data_ptr() != state["token_embed.weight"].data_ptr()
    assert torch.equal(copied.token_embed.weight, state["token_embed.weight"])


def test_loaded_weights_do_not_alias_the_file(word_weights):
    """safetensors maps the file: a network that kept those pages would change when the file is rewritten."""
    net, path = word_weights
    loaded = checkpoint.load_network(WORD, path)
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(64)  # zero the last tensor's tail, in place (same inode, as an overwrite does)
    with open(path, "r+b") as f:
        f.write(data)
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    half = checkpoint.load_network(WORD, path, dtype=torch.bfloat16)
    assert half.token_embed.weight.dtype == torch.bfloat16 and not half.token_embed.weight.is_meta


def _rewrite(path, edit):
    from safetensors.torch import save_file

    state = checkpoint.load_safetensors(path)
    edit(state)
    save_file(state, str(path))


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda s: s.pop("norm.bias"), r"1 tensor\(s\) missing \(norm.bias\)"),
        (lambda s: s.update(extra=torch.zeros(1)), r"1 unexpected \(extra\)"),
        (
            lambda s: s.update({"pos_embed": torch.zeros(5, 16)}),
            r"'pos_embed' has shape \[5, 16\], the config",
        ),
        (lambda s: s.update({"norm.bias": torch.zeros(16, dtype=torch.int32)}), "'norm.bias' is torch.int32"),
    ],
)
def test_every_tensor_is_checked_before_any_is_read(word_weights, monkeypatch, edit, match):
    import safetensors

    _, path = word_weights
    _rewrite(path, edit)

    def never(*args, **kwargs):
        raise AssertionError("tensor data read before the header was checked")

    monkeypatch.setattr(safetensors, "safe_open", never)
    with pytest.raises(ValueError, match=match):
        checkpoint.load_network(WORD, path)


def test_stored_dtype_is_checked(word_weights):
    _, path = word_weights
    with pytest.raises(ValueError, match="tensor 'pos_embed' is torch.float32, expected torch.bfloat16"):
        checkpoint.load_network(WORD, path, stored_dtype=torch.bfloat16)


@pytest.mark.parametrize("keep", [4, 100, -10])
def test_truncated_safetensors_is_a_clear_error(word_weights, keep):
    _, path = word_weights
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="is truncated"):
        checkpoint.load_network(WORD, path)
    with pytest.raises(ValueError, match="is truncated"):
        checkpoint.load_safetensors(path)


# ---- sharded checkpoints ----------------------------------------------------------------------------------


def test_sharded_metadata_pickle_payload_is_refused(tmp_path):
    import pickle

    from sora import checkpoint_sharded

    folder = checkpoint_sharded.save_sharded_checkpoint({"w": torch.ones(2)}, tmp_path / "ckpt", extra={})
    marker = tmp_path / "PWNED"
    (folder / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="refusing builtins.exec in a sharded checkpoint's .metadata"):
        checkpoint.load_torch_checkpoint(folder)
    assert not marker.exists()


def test_sharded_checkpoint_round_trip_and_bounds(tmp_path):
    from sora import checkpoint_sharded

    state = {"dit.w": torch.randn(3, 4), "dit.b": torch.arange(5)}
    folder = checkpoint_sharded.save_sharded_checkpoint(state, tmp_path / "ckpt", extra={"global_step": 7})
    ckpt = checkpoint.load_torch_checkpoint(folder)
    assert ckpt["global_step"] == 7 and set(ckpt["state_dict"]) == set(state)
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in state.items())
    for shard in folder.glob("*.distcp"):  # a shard cut short: the metadata promises more than the disk holds
        shard.write_bytes(shard.read_bytes()[:64])
    with pytest.raises(ValueError, match="declares .* bytes of tensors but the shard files hold"):
        checkpoint.load_torch_checkpoint(folder)
