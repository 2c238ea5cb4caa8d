"""sora.provenance: a signed manifest verifies, and a changed claim, changed content, a copied record or the
wrong key is caught; a remux keeps the content hash."""

import base64
import json

import numpy as np
import pytest

from sora import media, provenance
from sora.watermark_robustness import encode_decode, natural_clip


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    mine = provenance.load_private_key(provenance.generate_key(folder / "mine.pem"))
    theirs = provenance.load_private_key(provenance.generate_key(folder / "theirs.pem"))
    return folder, mine, theirs


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    rng = np.random.default_rng(0)
    return natural_clip(rng), natural_clip(rng)  # a "generated" clip, and a camera clip


def _signed(tmp_path, clip, key, name="gen.mp4"):
    record = provenance.claims(prompt="a red ball", seed=7, config_hash="cfg", model_hash="weights")
    video, audio = clip
    path = tmp_path / name
    provenance.write_clip(path, video, 24.0, audio, 16000, record, key)
    return path


def test_keygen_files_and_refusal_to_overwrite(keys):
    folder, mine, _ = keys
    assert (folder / "mine.pem").stat().st_mode & 0o777 == 0o600
    assert provenance.key_id(provenance.load_public_key(folder / "mine.pem.pub")) == provenance.key_id(
        mine.public_key()
    )
    with pytest.raises(ValueError, match="refusing to overwrite"):
        provenance.generate_key(folder / "mine.pem")
    with pytest.raises(ValueError, match="not found"):
        provenance.load_private_key(folder / "nope.pem")
    (folder / "junk.pem").write_text("hello")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        provenance.load_private_key(folder / "junk.pem")


def test_signed_manifest_is_valid_and_claims_are_c2pa_like(tmp_path, keys, clips):
    _, mine, _ = keys
    path = _signed(tmp_path, clips[0], mine)
    result = provenance.verify_manifest(path, [mine.public_key()])
    assert result["status"] == "valid", result
    claims = result["claims"]
    assert claims["actions"][0]["digitalSourceType"].endswith("trainedAlgorithmicMedia")
    assert claims["model_hash"] == "weights" and claims["seed"] == 7 and "created" in claims
    assert set(claims["content_sha256"]) == {"video", "audio"}
    assert provenance.verify_manifest(path)["status"] == "untrusted"  # consistent, but no trusted key given


def test_remux_keeps_the_content_hash(tmp_path, keys, clips):
    _, mine, _ = keys
    path = _signed(tmp_path, clips[0], mine)
    copy = provenance.remux(path, tmp_path / "copy.mp4", media.read_metadata(path))
    assert provenance.content_hash(copy) == provenance.content_hash(path)
    assert provenance.verify_manifest(copy, [mine.public_key()])["status"] == "valid"
    stripped = provenance.remux(path, tmp_path / "stripped.mp4", None)
    assert provenance.verify_manifest(stripped, [mine.public_key()])["status"] == "absent"


def test_changed_claim_is_invalid(tmp_path, keys, clips):
    _, mine, _ = keys
    path = _signed(tmp_path, clips[0], mine)
    record = media.read_metadata(path)
    record["seed"] = 8
    forged = provenance.remux(path, tmp_path / "claim.mp4", record)
    result = provenance.verify_manifest(forged, [mine.public_key()])
    assert result["status"] == "invalid" and "does not match the claims" in result["reason"]


def test_changed_content_is_invalid(tmp_path, keys, clips):
    _, mine, _ = keys
    path = _signed(tmp_path, clips[0], mine)
    record = media.read_metadata(path)
    video, audio = encode_decode(media.read_media(path).video, media.read_media(path).audio, crf=23)
    media.write_mp4(
        tmp_path / "re.mp4", video, 24.0, audio, 16000, metadata=record
    )  # re-encoded, record kept
    result = provenance.verify_manifest(tmp_path / "re.mp4", [mine.public_key()])
    assert result["status"] == "invalid" and "content does not match" in result["reason"]


def test_record_copied_onto_a_camera_clip_is_invalid(tmp_path, keys, clips):
    _, mine, _ = keys
    path = _signed(tmp_path, clips[0], mine)
    camera = tmp_path / "camera.mp4"
    media.write_mp4(camera, *clips[1][:1], 24.0)
    forged = provenance.remux(camera, tmp_path / "forged.mp4", media.read_metadata(path))
    assert provenance.verify_manifest(forged, [mine.public_key()])["status"] == "invalid"


def test_wrong_key_is_invalid(tmp_path, keys, clips):
    _, mine, theirs = keys
    path = _signed(tmp_path, clips[0], theirs)  # signed correctly, by someone else
    result = provenance.verify_manifest(path, [mine.public_key()])
    assert result["status"] == "invalid" and "not a trusted key" in result["reason"]
    # their public key swapped for mine in the record: the signature no longer matches
    record = media.read_metadata(path)
    raw = mine.public_key().public_bytes_raw()
    record["signature"]["public_key"] = base64.b64encode(raw).decode()
    swapped = provenance.remux(path, tmp_path / "swapped.mp4", record)
    assert provenance.verify_manifest(swapped, [mine.public_key()])["status"] == "invalid"


def test_unsigned_and_absent(tmp_path, clips):
    record = provenance.claims(prompt="x", seed=0, config_hash="c")
    path = tmp_path / "unsigned.mp4"
    provenance.write_clip(path, clips[0][0], 24.0, None, 16000, record, None)
    assert provenance.verify_manifest(path)["status"] == "unsigned"
    media.write_mp4(tmp_path / "plain.mp4", clips[1][0], 24.0)
    assert provenance.verify_manifest(tmp_path / "plain.mp4")["status"] == "absent"
    garbage = dict(media.read_metadata(path), signature={"alg": "Ed25519", "public_key": "!!", "value": "x"})
    bad = provenance.remux(path, tmp_path / "garbage.mp4", garbage)
    result = provenance.verify_manifest(bad)
    assert result["status"] == "invalid" and "malformed signature" in result["reason"]
    assert json.dumps(result)  # the report is JSON


def test_weights_hash_sees_every_weight():
    import torch

    net = torch.nn.Linear(3, 2)
    before = provenance.weights_hash({"dit": net})
    assert provenance.weights_hash({"dit": net}) == before
    with torch.no_grad():
        net.bias[1] += 1e-6
    assert provenance.weights_hash({"dit": net}) != before
