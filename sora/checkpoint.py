"""The one safe network loader: build networks from config dicts, and move their weights in and out of files.

Every network in the project is described by a plain dict ``{"_target_": "sora.models.dit.AVDiT", **kwargs}``.
The same dict is stored in Lightning checkpoints (as hyper-parameters) and in exports (``config.json``), and
:func:`build_module` turns it back into a module. Unlike ``hydra.utils.instantiate`` it only imports classes
on an allowlist of the project's own networks, so loading a downloaded export never executes code named in it.

Files are data, never commands, and never an unbounded allocation:

- every size in a config (depth, widths, heads, channels, patch sizes, token counts, ...) is checked against
  :data:`SIZE_LIMITS` before anything is built (:func:`check_config_sizes`, the error names the field);
- :func:`load_network` builds the network with its parameters on the meta device (no memory), checks every
  tensor of the weights file (name, shape, dtype; safetensors headers are read without reading the tensors)
  against it, and only then reads the tensors, straight into the network (``assign``: one copy in memory);
- ``torch.load`` only with ``weights_only=True``, and never of a URL (:func:`refuse_remote`);
- a sharded ``torch.distributed.checkpoint`` folder (FSDP ``state_dict_type=sharded``) is consolidated with
  its pickled ``.metadata`` read by an allowlist unpickler (:mod:`sora.checkpoint_sharded`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ALLOWED_TARGETS: frozenset[str] = frozenset(
    {
        "sora.models.video_vae.CausalVideoVAE",
        "sora.models.audio_vae.AudioVAE",
        "sora.models.dit.AVDiT",
        "sora.models.text.ByteTextEncoder",
        "sora.models.text.WordTextEncoder",
        "sora.models.text.HFTextEncoder",
    }
)
HF_TEXT_ENCODER = "sora.models.text.HFTextEncoder"

# ---- sizes ------------------------------------------------------------------------------------------------

_WIDTH, _DEPTH, _HEADS, _CHANNELS, _PATCH = 16384, 256, 512, 8192, 64
SIZE_LIMITS: dict[str, int | float] = {
    # transformer widths and depths (the largest open video DiTs: hidden 5120, depth 60)
    "hidden_size": _WIDTH,
    "dim": _WIDTH,
    "text_dim": _WIDTH,
    "freq_dim": _WIDTH,
    "rope_axes": _WIDTH,
    "depth": _DEPTH,
    "single_stream_depth": _DEPTH,
    "num_heads": _HEADS,
    "mlp_ratio": 64.0,
    # convolution channels and levels
    "in_channels": _CHANNELS,
    "out_channels": _CHANNELS,
    "latent_channels": _CHANNELS,
    "base_channels": _CHANNELS,
    "video_channels": _CHANNELS,
    "audio_channels": _CHANNELS,
    "channel_mult": 64,
    "num_res_blocks": 64,
    "num_layers": _DEPTH,
    # patches, compression, tokens
    "patch_size": _PATCH,
    "audio_patch_size": _PATCH,
    "temporal_compression": _PATCH,
    "max_length": 16384,
    "vocab_size": 1 << 21,
    "cache_size": 1 << 20,
    # audio framing
    "sample_rate": 384_000,
    "n_fft": 65536,
    "hop_length": 65536,
    "n_mels": 1024,
    "latent_rate": 1000,
    "n_iter": 10_000,
    "nnls_iters": 10_000,
}
"""The largest value each size field of a network config may take (list fields: each element)."""

HF_SIZE_LIMITS: dict[str, int] = {
    "d_model": _WIDTH,
    "hidden_size": _WIDTH,
    "projection_dim": _WIDTH,
    "d_kv": _WIDTH,
    "d_ff": 4 * _WIDTH,
    "intermediate_size": 4 * _WIDTH,
    "num_layers": _DEPTH,
    "num_decoder_layers": _DEPTH,
    "num_hidden_layers": _DEPTH,
    "num_heads": _HEADS,
    "num_attention_heads": _HEADS,
    "num_key_value_heads": _HEADS,
    "vocab_size": 1 << 21,
    "max_position_embeddings": 1 << 20,
    "n_positions": 1 << 20,
    "relative_attention_num_buckets": 1 << 16,
    "relative_attention_max_distance": 1 << 20,
}
"""The same bounds for a Hugging Face ``config.json`` (a bundled or referenced text encoder)."""

GENERIC_INT_LIMIT = 1 << 24
"""Any other integer in a config (not a known size field) must not exceed this either."""
MAX_LIST_LENGTH = 64
MAX_STRING_LENGTH = 4096
MAX_PARAMETERS = 10**11
"""The most parameters one network may have (checked on the meta device, before any weight is read)."""
MAX_JSON_BYTES = 16 << 20
"""The largest ``config.json`` / safetensors header read."""


def check_config_sizes(
    config: Mapping[str, Any],
    where: str = "config",
    limits: Mapping[str, int | float] = SIZE_LIMITS,
    max_list: int = MAX_LIST_LENGTH,
) -> None:
    """Raise ``ValueError`` naming the field when a size in ``config`` is out of bounds (or not a number).

    Known size fields (:data:`SIZE_LIMITS`) must be non-negative numbers at most their limit; any other
    integer at most :data:`GENERIC_INT_LIMIT`; nested dicts and lists are checked too (``channel_mult``,
    ``patch_size``, a Hugging Face ``text_config``), lists at most ``max_list`` long.
    """

    def check(key: str, value: Any, path: str) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                check(str(k), v, f"{path}.{k}")
            return
        if isinstance(value, (list, tuple)):
            if len(value) > max_list:
                raise ValueError(f"{where}: {path} has {len(value)} entries (at most {max_list})")
            for i, v in enumerate(value):
                check(key, v, f"{path}[{i}]")
            return
        if isinstance(value, str):
            if len(value) > MAX_STRING_LENGTH:
                raise ValueError(f"{where}: {path} is a {len(value)}-character string")
            if key in limits:
                raise ValueError(f"{where}: {path} must be a number, got the string {value[:40]!r}")
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{where}: {path} must be finite, got {value}")
            limit = limits.get(key)
            if limit is not None and not 0 <= value <= limit:
                raise ValueError(f"{where}: {path}={value} is out of bounds [0, {limit}]")
            return
        if isinstance(value, int):
            limit = limits.get(key, GENERIC_INT_LIMIT)
            if key in limits and value < 0:
                raise ValueError(f"{where}: {path}={value} must not be negative")
            if abs(value) > limit:
                raise ValueError(
                    f"{where}: {path}={value} is out of bounds (at most {limit}); refusing to allocate it"
                )
            return
        raise ValueError(f"{where}: {path} has an unsupported value of type {type(value).__name__}")

    for key, value in config.items():
        check(str(key), value, str(key))


# ---- building ---------------------------------------------------------------------------------------------


def to_plain_dict(config: Any) -> dict:
    """An OmegaConf node or mapping -> a plain, JSON-serialisable dict (interpolations resolved)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(config, Mapping):
        raise TypeError(f"expected a mapping config, got {type(config).__name__}")
    return json.loads(json.dumps(dict(config)))


def _resolve_target(config: dict) -> type:
    target = config.pop("_target_", None)
    if target is None:
        raise ValueError(f"network config has no _target_: {sorted(config)}")
    if target not in ALLOWED_TARGETS:
        raise ValueError(
            f"refusing to build {target!r}: not one of the project's networks "
            f"({', '.join(sorted(ALLOWED_TARGETS))})"
        )
    module_name, _, class_name = target.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside this block get their parameters on the meta device (shapes only, no memory).

    Buffers stay real: they are small (latent statistics, mel filterbanks) and some are computed in
    ``__init__`` and not saved. Each parameter is created by its layer and moved to meta as it is registered,
    so at most one uninitialised tensor exists at a time (the initialisers then run on meta: free).
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_module(config: Mapping[str, Any], *, empty: bool = False, **overrides: Any) -> nn.Module:
    """Construct ``config["_target_"](**rest, **overrides)`` if the target is on :data:`ALLOWED_TARGETS` and
    every size is within :data:`SIZE_LIMITS`; ``empty``: parameters on the meta device (see
    :func:`parameters_on_meta`), to be filled by :func:`load_network`."""
    config = to_plain_dict(config)
    target = config.get("_target_")
    cls = _resolve_target(config)
    config.update(overrides)
    check_config_sizes(config, f"network {target}")
    if not empty:
        return cls(**config)
    with parameters_on_meta():
        return cls(**config)


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a config (recorded in sample provenance and eval results)."""
    blob = json.dumps(to_plain_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---- torch checkpoints ------------------------------------------------------------------------------------

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str | Path | None) -> bool:
    """Whether ``path`` is a URL (``http://``, ``s3://``, ``hf://``, ``file://`` ...), not a local path."""
    return path is not None and bool(_URL.match(str(path)))


def refuse_remote(path: str | Path | None, what: str = "checkpoint") -> None:
    """A URL is never unpickled: raise ``ValueError`` for a remote ``path`` (the user downloads it first)."""
    if is_remote(path):
        raise ValueError(
            f"refusing to load a {what} from a URL ({path}): a checkpoint is a pickle and a remote one is "
            f"never unpickled. Download it yourself, check where it came from, and pass the local path."
        )


def load_torch_checkpoint(path: str | Path) -> dict:
    """A Lightning ``.ckpt`` (``torch.load`` with ``weights_only=True``, memory-mapped: tensors are read when
    used), or a sharded ``torch.distributed.checkpoint`` folder consolidated into the same dict. Never a
    URL."""
    refuse_remote(path)
    path = Path(path)
    if path.is_dir():
        from sora.checkpoint_sharded import is_sharded_checkpoint, load_sharded_checkpoint

        if is_sharded_checkpoint(path):
            return load_sharded_checkpoint(path)
        raise FileNotFoundError(f"{path} is a folder but not a sharded checkpoint (no .metadata)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):  # an old (non-zip) torch file cannot be memory-mapped
            raise
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


def sub_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` with the prefix stripped (``"dit"`` inside a module checkpoint)."""
    prefix = prefix.rstrip(".") + "."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


# ---- safetensors ------------------------------------------------------------------------------------------

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorSpec:
    """What a file says about one tensor, before it is read."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def read_safetensors_header(path: str | Path) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    """Name -> :class:`TensorSpec` and the metadata of a safetensors file, reading only its header.

    A file shorter than its header says (an interrupted copy) is a clear ``ValueError``, as is a header
    whose byte ranges do not match the shapes it declares.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated: {size} bytes, not even a safetensors header")
        n = int.from_bytes(head, "little")
        if n > MAX_JSON_BYTES:
            raise ValueError(
                f"{path}: safetensors header of {n} bytes (at most {MAX_JSON_BYTES}): not a weights file"
            )
        if 8 + n > size:
            raise ValueError(f"{path} is truncated: its header needs {8 + n} bytes, the file has {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: unreadable safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    specs, end = {}, 0
    for name, info in header.items():
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, stop = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: tensor {name!r} has an unreadable header entry {info!r:.200}") from err
        nbytes = math.prod(shape) * dtype.itemsize
        if min(shape, default=0) < 0 or stop - start != nbytes:
            raise ValueError(f"{path}: tensor {name!r} declares shape {shape} but {stop - start} bytes")
        specs[name] = TensorSpec(shape, dtype)
        end = max(end, stop)
    if 8 + n + end > size:
        raise ValueError(
            f"{path} is truncated: its header describes {8 + n + end} bytes, the file has {size} "
            f"(an interrupted copy or download? copy the file again)"
        )
    return specs, metadata


def save_safetensors(
    module_or_state: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write weights as safetensors (tensors made contiguous; shared storage is cloned); ``dtype`` casts the
    floating-point tensors."""
    from safetensors.torch import save_file

    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous().clone()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=metadata)
    return path


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (its header checked first: a truncated file is a clear error)."""
    from safetensors import safe_open

    specs, _ = read_safetensors_header(path)
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return {name: f.get_tensor(name) for name in specs}


# ---- the one loader ---------------------------------------------------------------------------------------


def check_tensors(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, TensorSpec],
    where: str,
    float_dtype: torch.dtype | None = None,
) -> None:
    """Every tensor the network needs is in the file with its shape, and nothing else is; floating-point
    tensors are floating point (exactly ``float_dtype`` when given), others have the network's dtype."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{where}: the weights do not match the config: {len(missing)} tensor(s) missing "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''})"
        )
    for name, want in expected.items():
        got = found[name]
        if tuple(want.shape) != got.shape:
            raise ValueError(
                f"{where}: tensor {name!r} has shape {list(got.shape)}, the config gives {list(want.shape)}"
            )
        if want.is_floating_point():
            ok = got.dtype.is_floating_point and (float_dtype is None or got.dtype == float_dtype)
            wanted = str(float_dtype) if float_dtype is not None else "a floating-point dtype"
        else:
            ok, wanted = got.dtype == want.dtype, str(want.dtype)
        if not ok:
            raise ValueError(f"{where}: tensor {name!r} is {got.dtype}, expected {wanted}")


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def load_network(
    config: Mapping[str, Any],
    weights: str | Path | Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    stored_dtype: torch.dtype | None = None,
    where: str | None = None,
    copy: bool = True,
) -> nn.Module:
    """Build ``config``'s network and load ``weights`` into it: the one safe network loader (eval mode).

    ``weights``: a safetensors path or a state dict (e.g. from :func:`load_torch_checkpoint`). In order:
    sizes bounded and target allow-listed (:func:`build_module`), parameters built on the meta device, the
    parameter count bounded (:data:`MAX_PARAMETERS`), every tensor's name, shape and dtype checked
    (:func:`check_tensors`; ``stored_dtype``: what the floating tensors must be stored as), then the tensors
    read one by one onto ``device`` (cast to ``dtype`` when given) and assigned to the network: one copy
    in memory. Each tensor is copied out of the file (safetensors and ``mmap`` checkpoints map it: a
    network aliasing a file that a running job rewrites would change or crash); ``copy=False`` assigns the
    given tensors themselves (a state dict the caller owns).
    """
    where = where or (str(weights) if isinstance(weights, (str, Path)) else str(config.get("_target_")))
    net = build_module(config, empty=True)
    if (n := _count(net)) > MAX_PARAMETERS:
        raise ValueError(f"{where}: the config describes {n:.3g} parameters (at most {MAX_PARAMETERS:.0g})")
    expected = net.state_dict(keep_vars=True)
    device = torch.device(device)

    def place(t: torch.Tensor, copy: bool) -> torch.Tensor:
        target = dtype if dtype is not None and t.is_floating_point() else t.dtype
        return t.to(device=device, dtype=target, copy=copy)

    if isinstance(weights, (str, Path)):
        from safetensors import safe_open

        specs, _ = read_safetensors_header(weights)
        check_tensors(expected, specs, where, stored_dtype)
        state = {}
        with safe_open(str(weights), framework="pt", device=str(device)) as f:
            for name in expected:
                state[name] = place(f.get_tensor(name), copy=True)  # get_tensor maps the file
    else:
        specs = {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in weights.items()}
        check_tensors(expected, specs, where, stored_dtype)
        state = {name: place(weights[name], copy) for name in expected}
    net.load_state_dict(state, strict=True, assign=True)
    net.to(device)  # the buffers that are not saved (e.g. mel filterbanks)
    if any(t.is_meta for t in net.state_dict().values()):  # pragma: no cover - internal invariant
        raise AssertionError(f"{where}: tensors left on the meta device after loading")
    return net.eval()


def load_network_from_checkpoint(
    path: str | Path, name: str, *, use_ema: bool = True, dtype: torch.dtype | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild the network stored as attribute ``name`` of a project LightningModule checkpoint.

    The project's modules save each network's config dict as the hyper-parameter of the same name and keep
    EMA weights (when an EMA callback ran) in ``checkpoint["ema_state_dict"]`` with the same key prefixes as
    ``state_dict``; EMA weights are preferred unless ``use_ema`` is False. Returns the module (in eval mode)
    and its config dict.
    """
    ckpt = load_torch_checkpoint(path)
    config = (ckpt.get("hyper_parameters") or {}).get(name)
    if config is None:
        raise ValueError(f"{path}: no network config {name!r} in the checkpoint's hyper-parameters")
    net = load_network(
        config, checkpoint_state(ckpt, name, use_ema=use_ema), dtype=dtype, where=f"{path}:{name}"
    )
    return net, to_plain_dict(config)


def checkpoint_state(ckpt: Mapping[str, Any], name: str, *, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Network ``name``'s weights in a module checkpoint: ``state_dict`` entries, EMA ones over them."""
    state = sub_state_dict(ckpt.get("state_dict") or {}, name)
    if use_ema and ckpt.get("ema_state_dict"):
        state.update(sub_state_dict(ckpt["ema_state_dict"], name))
    return state
