"""benchmarks/dit.py runs: it builds AVDiT from its arguments and times a step (it once passed a keyword
AVDiTConfig no longer takes, and nothing ran it); benchmarks/dit_step.py --profile prints a step's profile."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "dit.py"


def test_dit_benchmark_times_a_step_of_the_model_it_describes():
    args = ["--device", "cpu", "--hidden", "32", "--depth", "2", "--heads", "2", "--frames", "2"]
    args += ["--height", "4", "--width", "4", "--text-dim", "16", "--audio", "--steps", "1", "--warmup", "0"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hidden=32 depth=2 heads=2 batch=1 video tokens=8" in proc.stdout, proc.stdout
    assert "AVDiT  (video+audio):" in proc.stdout and "ms/step" in proc.stdout, proc.stdout


@pytest.mark.slow  # ~30 s: synthetic clips, latents and two short fits
def test_dit_step_profile_prints_where_the_steps_time_goes():
    script = Path(__file__).parents[1] / "benchmarks" / "dit_step.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--profile", "1"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for kind in ("image", "video"):
        assert f"== {kind} steps (cpu): median" in proc.stdout, proc.stdout[-2000:]
    assert proc.stdout.count("Self CPU") >= 2 and "aten::" in proc.stdout
