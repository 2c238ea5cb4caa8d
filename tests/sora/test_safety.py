"""sora.safety verify: the user's probes. A re-encode or a remux that drops the metadata no longer looks
like a real clip (the invisible mark is found); a forged or copied record on a camera clip is never
"generated"."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sora import media, provenance, safety
from sora.pipeline import GeneratedClip, GenerationRequest, save_clip
from sora.watermark_robustness import encode_decode, natural_clip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A key (made with the CLI), a clip saved by save_clip with it, one saved without, and a camera clip."""
    folder = tmp_path_factory.mktemp("safety")
    assert safety.main(["keygen", str(folder / "key.pem")]) == 0
    key = provenance.load_private_key(folder / "key.pem")
    rng = np.random.default_rng(0)
    video, audio = natural_clip(rng)
    clip = GeneratedClip(video, audio, 24.0, 16000, GenerationRequest(prompt="a red ball falls", seed=3))
    signed = save_clip(clip, folder / "signed.mp4", config_hash="cfg", signing_key=folder / "key.pem")
    public = save_clip(clip, folder / "public.mp4", config_hash="cfg")
    camera = folder / "camera.mp4"
    camera_video, camera_audio = natural_clip(rng)
    media.write_mp4(camera, camera_video, 24.0, camera_audio, 16000)
    return folder, key, signed, public, camera


def test_keygen_cli(setup, capsys):
    folder = setup[0]
    assert (folder / "key.pem.pub").is_file()
    assert safety.main(["keygen", str(folder / "key.pem")]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_signed_clip_is_generated(setup):
    _, key, signed, _, _ = setup
    report = safety.verify(signed, key=key)
    assert report["verdict"] == "generated" and report["manifest"]["status"] == "valid"
    assert report["watermark"]["detected_with"] == "signing key"
    assert report["manifest"]["claims"]["watermark"] == {
        "visible": True,
        "invisible": True,
        "invisible_key": "signing key",
    }


def test_reencode_and_remux_no_longer_look_like_a_real_clip(setup, tmp_path):
    _, key, signed, _, camera = setup
    back = media.read_media(signed)
    video, audio = encode_decode(back.video, back.audio, crf=23)
    media.write_mp4(tmp_path / "reencoded.mp4", video, 24.0, audio, 16000)  # metadata gone
    provenance.remux(signed, tmp_path / "remuxed.mp4", None)  # metadata gone, packets kept
    for path in (tmp_path / "reencoded.mp4", tmp_path / "remuxed.mp4"):
        report = safety.verify(path, key=key)
        assert report["manifest"]["status"] == "absent"
        assert report["verdict"] == "watermarked", report["watermark"]
        marks = report["watermark"]["keys"]["signing key"]
        assert marks["video"]["detected"] and marks["audio"]["detected"], marks  # each modality on its own
    real = safety.verify(camera, key=key)
    assert real["verdict"] == "no provenance found" and real["watermark"]["detected_with"] is None


def test_forged_records_on_a_camera_clip_are_never_generated(setup, tmp_path):
    _, key, signed, _, camera = setup
    old_style = {"generator": "sora-open", "ai_generated": True, "model_config_hash": "cfg", "seed": 1}
    unsigned = provenance.remux(camera, tmp_path / "unsigned.mp4", old_style)
    report = safety.verify(unsigned, key=key)
    assert report["manifest"]["status"] == "unsigned" and report["verdict"] == "no provenance found"
    copied = provenance.remux(camera, tmp_path / "copied.mp4", media.read_metadata(signed))
    report = safety.verify(copied, key=key)
    assert report["manifest"]["status"] == "invalid" and report["verdict"] == "manifest invalid"
    assert safety.main(["verify", str(copied), "--key", str(setup[0] / "key.pem")]) == 2


def test_clip_without_a_key_carries_the_public_mark(setup):
    _, key, _, public, _ = setup
    report = safety.verify(public)
    assert report["manifest"]["status"] == "unsigned"
    assert report["verdict"] == "watermarked" and report["watermark"]["detected_with"] == "public"
    # a public-key mark is not the signing key's
    assert safety.verify(public, key=key)["watermark"]["keys"]["signing key"]["video"]["detected"] is False


def test_verify_cli_exit_status_and_json(setup, capsys):
    folder, _, signed, _, camera = setup
    key = ["--key", str(folder / "key.pem")]
    assert safety.main(["verify", str(camera), *key]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "no provenance found"
    assert safety.main(["verify", str(folder / "missing.mp4"), *key]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert safety.main(["verify", str(signed), "--key", str(folder / "missing.pem")]) == 1
    err = capsys.readouterr().err
    assert "signing key" in err and "not found" in err
    # `python -m sora.safety verify` itself (one subprocess: importing torch is slow on shared cores)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "sora.safety", "verify", *key, str(signed)]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "generated"
