"""Signed provenance manifests for generated clips (C2PA-style claims, ed25519 signatures).

A saved clip carries, in its container metadata (``media.METADATA_KEY``), a record of claims: generator and
version, ``c2pa.created`` with the IPTC digital source type ``trainedAlgorithmicMedia``, the model's hashes,
the prompt's SHA-256 (never the prompt), seed, mode, creation time, and the SHA-256 of the clip's *content*:
the encoded video and audio packets and their codec headers, so a remux keeps it and any re-encode or edit
changes it. With a signing key the record gets an ``Ed25519`` signature over its canonical JSON (sorted keys,
no spaces) and the signer's public key.

:func:`verify_manifest` checks, in order: a record is there (``absent``), it is signed (``unsigned``: claims
anyone can write), the signature matches the claims (``invalid``: a claim was changed or the record
forged),
the content hash matches the clip (``invalid``: the content was changed or the record copied onto another
clip), and the signer is a key the caller trusts (``invalid`` if trusted keys were given and it is another
key, ``untrusted`` when none were given). Only ``valid`` is evidence that the holder of a trusted key
generated it.

Keys: ``python -m sora.safety keygen KEY`` writes ``KEY`` (PKCS#8 PEM, mode 0600) and ``KEY.pub``.
The invisible watermark's secret is derived from the private key (:func:`watermark_key`), so one file keys
both; the public key verifies manifests but cannot detect that watermark.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import sora
from sora import media

GENERATOR_NAME = "sora-open"
SIGNATURE_ALG = "Ed25519"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
STATUSES = ("valid", "invalid", "untrusted", "unsigned", "absent")


# ---- keys ----------------------------------------------------------------------------------------------


def generate_key(path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a new ed25519 private key to ``path`` (mode 0600) and its public key to ``path.pub``."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; refusing to overwrite a key (pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path(path).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def public_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".pub")


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(
            f"signing key {path} not found (create one with: python -m sora.safety keygen {path})"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """A public key from a ``.pub`` PEM file, or the public half of a private key file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"key file {path} not found")
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise ValueError(f"{path} is not a PEM public key: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return key


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def watermark_key(key: Ed25519PrivateKey) -> bytes:
    """The invisible watermark's secret, derived from the signing key (one file keys both)."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return hashlib.sha256(b"sora-open watermark key v1|" + raw).digest()


# ---- content -------------------------------------------------------------------------------------------


def weights_hash(modules: dict[str, Any]) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes) of named ``nn.Module``s: the
    model hash a manifest claims (the config hash alone would not tell two trainings apart)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(modules):
        for key, tensor in sorted(modules[name].state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}.{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def content_hash(src: media.Source) -> dict[str, str]:
    """SHA-256 of each video/audio stream's codec header (extradata) and packet payloads, in stream order.

    A remux copies packets, so it keeps these hashes; a re-encode, an edit or another clip changes them."""
    with media._open(src) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        hashers, names = {}, {}
        for stream in streams:
            h = hashlib.sha256()
            h.update(stream.codec_context.name.encode() + b"|")
            h.update(bytes(stream.codec_context.extradata or b""))
            hashers[stream.index] = h
            names[stream.index] = (
                stream.type if stream.type not in names.values() else f"{stream.type}{stream.index}"
            )
        for packet in container.demux(streams):
            if packet.size and packet.stream.index in hashers:
                hashers[packet.stream.index].update(bytes(packet))
    out = {names[i]: h.hexdigest() for i, h in hashers.items()}
    return out


def remux(src: media.Source, dst: str | Path, metadata: dict | None) -> Path:
    """Copy the video and audio packets of ``src`` into a new mp4 at ``dst`` with ``metadata`` (or none)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with (
        media._open(src) as inp,
        av.open(str(dst), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as out,
    ):
        if metadata:
            out.metadata[media.METADATA_KEY] = json.dumps(metadata, sort_keys=True)
        mapping = {}
        for stream in inp.streams:
            if stream.type in ("video", "audio"):
                mapping[stream.index] = out.add_stream_from_template(stream)
        for packet in inp.demux(list(inp.streams)):
            if packet.dts is None or packet.stream.index not in mapping:
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return dst


# ---- claims and signatures -----------------------------------------------------------------------------


def claims(
    *,
    prompt: str,
    seed: int,
    config_hash: str,
    mode: str = "t2av",
    model_hash: str | None = None,
    extra: dict | None = None,
) -> dict:
    """The claims of a generated clip (C2PA-like). The content hash is added when the clip is written."""
    record: dict[str, Any] = {
        "generator": GENERATOR_NAME,
        "version": sora.__version__,
        "claim_generator": f"{GENERATOR_NAME}/{sora.__version__}",
        "ai_generated": True,
        "actions": [{"action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE}],
        "model_config_hash": config_hash,
        "model_hash": model_hash or config_hash,
        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "seed": int(seed),
        "mode": mode,
        "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    if extra:
        record.update(extra)
    return record


def canonical(record: dict) -> bytes:
    """The bytes a signature covers: the record without ``signature``, sorted keys, no whitespace."""
    body = {k: v for k, v in record.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(record: dict, key: Ed25519PrivateKey) -> dict:
    """``record`` with an ``Ed25519`` signature (and the signer's public key) over its canonical form."""
    public = key.public_key()
    return {
        **{k: v for k, v in record.items() if k != "signature"},
        "signature": {
            "alg": SIGNATURE_ALG,
            "public_key": base64.b64encode(_raw_public(public)).decode(),
            "key_id": key_id(public),
            "value": base64.b64encode(key.sign(canonical(record))).decode(),
        },
    }


def write_clip(
    path: str | Path,
    video: Any,
    fps: float,
    audio: Any,
    sample_rate: int,
    record: dict,
    key: Ed25519PrivateKey | None = None,
) -> dict:
    """Encode a clip, add its content hash to ``record``, sign it when ``key`` is given, and write the mp4
    with the record as metadata (packets are encoded once and remuxed, so the hash is of what is on disk).
    Returns the stored record."""
    data = media.encode_mp4(video, fps, audio, sample_rate)
    record = {**record, "content_sha256": content_hash(data)}
    if key is not None:
        record = sign(record, key)
    remux(data, path, record)
    return record


def verify_manifest(path: media.Source, trusted: list[Ed25519PublicKey] | None = None) -> dict:
    """Check a clip's manifest; returns ``{"status", "reason", "claims", "key_id"}`` (see the module doc)."""
    record = media.read_metadata(path)
    if not record or (record.get("generator") != GENERATOR_NAME and "signature" not in record):
        return {"status": "absent", "reason": f"no {GENERATOR_NAME} provenance record"}
    claims_ = {k: v for k, v in record.items() if k != "signature"}
    sig = record.get("signature")
    if not isinstance(sig, dict):
        return {
            "status": "unsigned",
            "reason": "the record carries no signature: anyone can write these claims, they prove nothing",
            "claims": claims_,
        }
    try:
        if sig.get("alg") != SIGNATURE_ALG:
            raise ValueError(f"unsupported signature algorithm {sig.get('alg')!r}")
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(sig["public_key"], validate=True))
        public.verify(base64.b64decode(sig["value"], validate=True), canonical(record))
    except (InvalidSignature, ValueError, KeyError, TypeError) as err:
        reason = "the signature does not match the claims (a claim was changed or the record forged)"
        if not isinstance(err, InvalidSignature):
            reason = f"malformed signature: {err}"
        return {"status": "invalid", "reason": reason, "claims": claims_}
    kid = key_id(public)
    actual = content_hash(path)
    if claims_.get("content_sha256") != actual:
        return {
            "status": "invalid",
            "reason": "the content does not match the signed content hash (edited, re-encoded, or the record "
            "was copied from another clip)",
            "claims": claims_,
            "key_id": kid,
        }
    if trusted:
        if kid not in {key_id(k) for k in trusted}:
            return {
                "status": "invalid",
                "reason": f"signed by key {kid}, which is not a trusted key",
                "claims": claims_,
                "key_id": kid,
            }
        reason = "signature, content hash and signer check out"
        return {"status": "valid", "reason": reason, "claims": claims_, "key_id": kid}
    return {
        "status": "untrusted",
        "reason": f"signature and content hash check out, but no trusted key was given (--key/--public-key): "
        f"anyone can sign with their own key ({kid})",
        "claims": claims_,
        "key_id": kid,
    }
