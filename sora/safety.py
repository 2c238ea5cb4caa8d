"""Safety for generated clips: the prompt filter, watermarks, and provenance, with their command line.

``python -m sora.safety keygen KEY`` writes an ed25519 signing key (``KEY``, mode 0600) and ``KEY.pub``.

``python -m sora.safety verify CLIP... [--key KEY] [--public-key KEY.pub ...]`` reports for each clip:

- ``manifest``: the signed provenance record's status (:mod:`sora.provenance`): ``valid`` (signature,
  content hash and a trusted signer check out), ``invalid`` (a claim or the content changed, the record was
  copied from another clip, or an untrusted key signed it), ``untrusted`` (consistent, but no trusted key was
  given), ``unsigned`` (claims anyone could write) or ``absent``;
- ``watermark``: the invisible marks in the frames and the sound (:mod:`sora.watermark`), with their scores,
  for the key derived from ``--key`` and for the public key that unsigned clips are marked with;
- ``verdict``: ``generated`` only for a valid manifest; ``watermarked`` when a mark is detected without a
  valid manifest (metadata stripped by a re-encode or remux); ``manifest invalid``; or
  ``no provenance found``.
  An unsigned or forged record is never called generated.

Exit status: 0 when every clip is ``generated`` or ``watermarked``, 2 when some clip has an invalid manifest
and no mark, 1 otherwise (nothing found, or a file could not be read).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sora import media, provenance, watermark
from sora.prompt_filter import (
    DEFAULT_BLOCKLIST,
    DEFAULT_COMPACT_BLOCKLIST,
    PromptFilter,
    PromptRejected,
    normalize_variants,
)
from sora.provenance import GENERATOR_NAME
from sora.watermark import apply_watermark, watermark_position

__all__ = [
    "DEFAULT_BLOCKLIST",
    "DEFAULT_COMPACT_BLOCKLIST",
    "GENERATOR_NAME",
    "PromptFilter",
    "PromptRejected",
    "apply_watermark",
    "normalize_variants",
    "provenance_record",
    "verify",
    "watermark_position",
]

VERDICTS = ("generated", "watermarked", "manifest invalid", "no provenance found")


def provenance_record(
    *, prompt: str, seed: int, config_hash: str, mode: str = "t2av", extra: dict | None = None
) -> dict:
    """The claims stored in a generated clip (see :func:`sora.provenance.claims`)."""
    return provenance.claims(prompt=prompt, seed=seed, config_hash=config_hash, mode=mode, extra=extra)


def verify(
    path: str | Path,
    *,
    key: Ed25519PrivateKey | None = None,
    trusted: list[Ed25519PublicKey] | None = None,
) -> dict:
    """The provenance report of one clip: ``manifest``, ``watermark`` and ``verdict`` (module doc).

    ``key``: the signing key (trusted as a signer, and the source of the watermark secret); ``trusted``: more
    public keys whose signatures count."""
    trusted = list(trusted or []) + ([key.public_key()] if key is not None else [])
    manifest = provenance.verify_manifest(path, trusted)
    clip = media.read_media(path)
    keys = {"public": watermark.PUBLIC_KEY_LABEL}
    if key is not None:
        keys = {"signing key": provenance.watermark_key(key), **keys}
    marks, found = {}, None
    for name, secret in keys.items():
        video = watermark.detect_video(clip.video, secret).as_dict()
        audio = (
            watermark.detect_audio(clip.audio, int(clip.sample_rate), secret).as_dict()
            if clip.audio is not None
            else {"detected": False, "reason": "no audio stream"}
        )
        marks[name] = {"video": video, "audio": audio}
        if found is None and (video["detected"] or audio["detected"]):
            found = name
    if manifest["status"] == "valid":
        verdict = "generated"
    elif found is not None:
        verdict = "watermarked"
    elif manifest["status"] == "invalid":
        verdict = "manifest invalid"
    else:
        verdict = "no provenance found"
    return {
        "clip": str(path),
        "verdict": verdict,
        "manifest": manifest,
        "watermark": {"detected_with": found, "keys": marks},
    }


def _exit_status(reports: list[dict]) -> int:
    if any(r["verdict"] == "manifest invalid" for r in reports):
        return 2
    return 0 if reports and all(r["verdict"] in ("generated", "watermarked") for r in reports) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sora.safety",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("keygen", help="write a new ed25519 signing key (and KEY.pub)")
    gen.add_argument("key")
    gen.add_argument("--force", action="store_true", help="replace an existing key")
    check = sub.add_parser("verify", help="check a clip's signed manifest and invisible watermark")
    check.add_argument("clips", nargs="+")
    check.add_argument("--key", help="the signing key (private): trusted signer and watermark secret")
    check.add_argument("--public-key", action="append", default=[], help="a trusted signer's KEY.pub")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        try:
            path = provenance.generate_key(args.key, overwrite=args.force)
        except (ValueError, OSError) as err:
            print(f"keygen: {err}", file=sys.stderr)
            return 1
        public = provenance.load_public_key(provenance.public_path(path))
        kid = provenance.key_id(public)
        print(f"wrote {path} (keep it secret) and {provenance.public_path(path)}; key id {kid}")
        return 0
    try:
        key = provenance.load_private_key(args.key) if args.key else None
        trusted = [provenance.load_public_key(p) for p in args.public_key]
    except ValueError as err:
        print(f"verify: {err}", file=sys.stderr)
        return 1
    reports, failed = [], False
    for clip in args.clips:
        try:
            report = verify(clip, key=key, trusted=trusted)
        except (ValueError, OSError) as err:
            print(f"{clip}: cannot read: {err}", file=sys.stderr)
            failed = True
            continue
        reports.append(report)
        print(json.dumps(report, indent=2, sort_keys=True))
    status = _exit_status(reports)
    return 1 if failed and status == 0 else status


if __name__ == "__main__":
    raise SystemExit(main())
