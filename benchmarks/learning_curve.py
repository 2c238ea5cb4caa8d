"""The headline metrics of a quickstart run's DiT against its training steps: how many steps (minutes) a
target needs.

    python benchmarks/learning_curve.py outputs/quickstart [--scenes 30] [--modes t2av] [--every 500]

Scores every intermediate DiT checkpoint of the run (``dit/checkpoints/step*.ckpt``, saved every 500 steps,
and ``last.ckpt``) with the run's own ``world`` suite config (:func:`sora.quickstart.eval_config`: the same
held-out scenes, sampling steps and overrides; ``--scenes`` fewer scenes for speed) and prints, per
checkpoint, each headline metric with its 95 % interval; the minutes column is the step times the run's
measured DiT step time. Writes ``<run>/learning_curve/curve.json`` and ``curve_<mode>.png`` (one panel per
headline); the run's own report holds the untrained model and ground truth, the two ends of each axis.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

HEADLINES = (
    "left_right_accuracy",
    "persistence",
    "detection_rate",
    "sync_f1",
    "pos_err_px",
    "colour_accuracy",
)


def checkpoints(run: Path, every: int) -> list[tuple[int, Path]]:
    """(step, path) of the run's DiT checkpoints at multiples of ``every`` steps, and the last one."""
    folder = run / "dit" / "checkpoints"
    found = []
    for path in sorted(folder.glob("step*.ckpt")):
        step = int(re.findall(r"\d+", path.stem)[0])
        if step % every == 0:
            found.append((step, path))
    last = folder / "last.ckpt"
    if last.exists():
        from sora.checkpoint import load_torch_checkpoint

        step = int(load_torch_checkpoint(last)["global_step"])
        if all(s != step for s, _ in found):
            found.append((step, last))
    if not found:
        raise ValueError(f"no DiT checkpoints in {folder}: is {run} a quickstart out_dir?")
    return sorted(found)


def seconds_per_step(run: Path) -> float | None:
    """The DiT's seconds per step as the run's budget calibration measured it (None without a plan)."""
    plan = run / "budget_plan.json"
    if not plan.exists():
        return None
    return float(json.loads(plan.read_text())["stages"]["dit"]["step_s"])


def score(run: Path, step: int, ckpt: Path, scenes: int | None, modes: list[str]) -> dict:
    """The suite's ``generated/<mode>`` summaries for one checkpoint (cached in its folder)."""
    from omegaconf import OmegaConf, open_dict

    import eval.suite as suite
    from sora.quickstart import eval_config

    out = run / "learning_curve" / f"step{step:06d}"
    results = out / "results.json"
    if not results.exists():
        cfg = OmegaConf.load(run / "quickstart_config.yaml")
        if scenes is not None:
            cfg.eval_scenes = scenes
        eval_cfg = eval_config(cfg, ckpt, out)
        with open_dict(eval_cfg):
            eval_cfg.suite.modes = list(modes)
            eval_cfg.suite.broken = []
            eval_cfg.suite.vae_round_trip = False  # the same VAEs at every step: the run's report has it
        suite.run(eval_cfg)
    summary = json.loads(results.read_text()).get("summary", {})
    return {mode: summary.get(f"generated/{mode}", {}) for mode in modes}


def plot(curve: list[dict], mode: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    steps = [row["step"] for row in curve]
    for ax, key in zip(axes.ravel(), HEADLINES, strict=True):
        mean = [row[mode].get(key, float("nan")) for row in curve]
        lo = [row[mode].get(f"{key}_lo", float("nan")) for row in curve]
        hi = [row[mode].get(f"{key}_hi", float("nan")) for row in curve]
        ax.plot(steps, mean, "o-")
        ax.fill_between(steps, lo, hi, alpha=0.25)
        ax.set_title(key)
        ax.set_xlabel("DiT steps")
    fig.suptitle(f"{mode}: headline metrics vs training steps (95% intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a quickstart out_dir")
    parser.add_argument("--scenes", type=int, default=None, help="held-out scenes (default: the run's)")
    parser.add_argument("--modes", nargs="+", default=["t2av"])
    parser.add_argument("--every", type=int, default=500, help="score checkpoints at multiples of this")
    args = parser.parse_args()
    sec = seconds_per_step(args.run)
    curve = []
    for step, ckpt in checkpoints(args.run, args.every):
        scores = score(args.run, step, ckpt, args.scenes, args.modes)
        curve.append({"step": step, "minutes": step * sec / 60 if sec else None, **scores})
        row = curve[-1]
        cells = []
        for key in HEADLINES:
            m = row[args.modes[0]]
            if key in m:
                cells.append(f"{key} {m[key]:.2f} [{m[f'{key}_lo']:.2f}, {m[f'{key}_hi']:.2f}]")
        minutes = f"{row['minutes']:.1f} min" if row["minutes"] is not None else "?"
        print(f"step {step:5d} ({minutes}): " + "; ".join(cells), flush=True)
    out = args.run / "learning_curve"
    (out / "curve.json").write_text(json.dumps(curve, indent=2))
    for mode in args.modes:
        plot(curve, mode, out / f"curve_{mode}.png")
    print(f"wrote {out / 'curve.json'} and curve_<mode>.png")


if __name__ == "__main__":
    main()
