"""sora.metrics sits below training and evaluation: one implementation that both import (the metric values
themselves are tested in tests/eval/test_recon.py)."""

import ast
from pathlib import Path

import numpy as np

import eval.recon
import sora.metrics

SORA = Path(sora.metrics.__file__).parent
ORCHESTRATORS = {"quickstart.py"}  # runs the eval suite as its last stage, the one place above both


def test_eval_recon_uses_the_same_functions():
    for name in ("psnr", "ssim", "log_mel_l1", "LPIPS", "PSNR_CAP_DB"):
        assert getattr(eval.recon, name) is getattr(sora.metrics, name), name


def test_training_and_models_never_import_eval():
    offenders = []
    for path in sorted(SORA.rglob("*.py")):
        if path.name in ORCHESTRATORS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.relative_to(SORA.parent)}: {n}" for n in names if n.split(".")[0] == "eval"]
    assert not offenders, offenders


def test_psnr_of_a_known_error():
    ref = np.full((2, 8, 8, 3), 100, np.uint8)
    assert sora.metrics.psnr(ref + 5, ref) == 10 * np.log10(255**2 / 25)
