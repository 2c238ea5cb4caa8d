"""DiT arms on finished quickstart runs, and their comparison with controls scene by scene: what one changed
ingredient of the DiT's recipe buys, at the same budget, on the same world, VAEs, latents and text encoder.

    python benchmarks/dit_arms.py train outputs/quickstart outputs/arm_shift3 module.flow.shift=3.0
    python benchmarks/dit_arms.py train outputs/quickstart outputs/arm_control     # no override: the control
    python benchmarks/dit_arms.py compare outputs/arm_shift3=outputs/arm_control \\
        outputs/arm_shift3_s1=outputs/arm_control_s1 [--group generated/t2av] [--json out.json]

``train SOURCE OUT [override ...]``: a quickstart run in ``OUT`` made of the finished run ``SOURCE``'s config
(its ``quickstart_config.yaml``: seed, world, recipe) with the overrides appended to its ``dit_overrides``.
World, VAEs and latents are linked from ``SOURCE``, its text encoder is copied, so only the DiT trains again,
for as long as the source's DiT did: its budget plan is copied with the DiT's minutes set to the source's
measured DiT time over the time cap's slack (the cap then ends the arm when the source's DiT ended; the DiT
plans its steps again from its own step times, so an arm whose steps are slower gets fewer). A source run
with ``budget_min=null`` has no plan: the arm trains its fixed steps. The eval scores text-to-video only,
with no broken anchors and the untrained baseline on one scene (``--full-eval``: the source's eval).
``OUT/arm.json`` records the source and the overrides.

``compare ARM=CONTROL ...``: for each pair of finished runs (folders or their ``results.json``) the paired
scene-by-scene difference arm - control of each metric (:func:`eval.stats.paired`: mean difference and win
rate with scene-bootstrap 95 % intervals), and the pooled difference over all pairs (each pair's scenes are
its own clusters). Prints a markdown table: every run's means with intervals, then the differences.

What the intervals do not cover: the training run's own noise. The same recipe trained twice on the same
stages with the same seed (the DiT's step count follows its measured step times, so the two runs take
different steps and schedules) differed by -0.06 [-0.10, -0.02] detection rate and +4.5 [+2.0, +7.1] px
position error over the 60 scenes of two sources (README, "Sampling knobs and DiT arms"), as much as most
arms' effects (``compare CONTROL=SOURCE`` measures it). Compare an arm with controls trained the same way
(``train`` without overrides), on at least two sources, and read a pooled difference inside that spread as
not measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from eval.summary import HEADLINE

METRICS = (*(m for m in HEADLINE if m != "dynamic_degree"), "loudness_diff_db")
"""The compared metrics by default: the suite's headlines but the dynamic degree, and the loudness (#17's)."""

LINKED = ("world", "world_val", "vae_video", "vae_audio", "latents")
"""The source's stages an arm uses as they are (symlinks)."""
TRAINED = ("world", "vae_video", "vae_audio", "latents")
"""Those a finished stage marks with a DONE file."""

ARM_EVAL = ["suite.modes=[t2av]", "suite.broken=[]", "suite.baseline_scenes=1"]
"""The arms' eval overrides: the headline mode only; the anchors are the source's."""


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if not link.is_symlink() or link.resolve() != target.resolve():
            raise FileExistsError(f"{link} exists and is not a link to {target}: use a fresh OUT folder")
        return
    link.symlink_to(target.resolve())


def prepare_arm(source: Path, out: Path, overrides: list[str], *, full_eval: bool = False) -> DictConfig:
    """Set up ``out`` as an arm of the finished quickstart run ``source`` (links, text encoder, plan) and
    return the arm's quickstart config; :func:`sora.quickstart.run` on it trains and scores the arm."""
    from sora.quickstart import TEXT_ENCODER_FILE
    from sora.quickstart_budget import TIME_CAP_SLACK

    source, out = Path(source), Path(out)
    saved = source / "quickstart.json"
    if not saved.exists():
        raise FileNotFoundError(f"{saved} not found: {source} is not a finished quickstart run")
    timings = json.loads(saved.read_text())["timings_s"]
    missing = [name for name in LINKED if not (source / name).exists()]
    missing += [n for n in TRAINED if (source / n).exists() and not (source / n / "DONE").exists()]
    if missing:
        raise FileNotFoundError(f"{source} lacks the finished stages {missing}")
    text_encoder = source / "dit" / TEXT_ENCODER_FILE
    cfg = OmegaConf.load(source / "quickstart_config.yaml")
    out.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        _link(source / name, out / name)
    (out / "dit").mkdir(exist_ok=True)
    if text_encoder.exists():  # text_pretrain.steps=0 runs have none
        shutil.copy(text_encoder, out / "dit" / TEXT_ENCODER_FILE)
    dit_minutes = None
    plan_path = source / "budget_plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        dit_minutes = float(timings["dit"]) / 60.0 / TIME_CAP_SLACK
        plan["stages"]["dit"]["minutes"] = dit_minutes
        (out / "budget_plan.json").write_text(json.dumps(plan, indent=2))
    with open_dict(cfg):
        cfg.out_dir = str(out)
        cfg.dit_overrides = [*cfg.get("dit_overrides", []), *overrides]
        if not full_eval:
            cfg.eval_overrides = list(ARM_EVAL)
    record = {"source": str(source), "overrides": list(overrides), "dit_minutes": dit_minutes}
    (out / "arm.json").write_text(json.dumps(record, indent=2))
    return cfg


def _results(path: Path) -> Path:
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def scene_values(results: dict, group: str, name: str) -> dict[str, float]:
    """``{scene: value}`` of summary metric ``name`` for ``group`` in a suite's ``results.json``."""
    from eval.summary import SUMMARY, per_scene

    rows = [c for c in results["clips"] if c["group"] == group]
    if not rows:
        groups = sorted({c["group"] for c in results["clips"]})
        raise ValueError(f"no clips of group {group!r} in these results; groups: {groups}")
    return per_scene(rows, SUMMARY[name][0])


def compare(
    pairs: list[tuple[Path, Path]], *, group: str = "generated/t2av", metrics: tuple[str, ...] = METRICS
) -> dict:
    """Paired differences arm - control per pair and pooled over the pairs; each run's summary means."""
    from eval.report import direction
    from eval.stats import paired

    if not pairs:
        raise ValueError("compare needs at least one ARM=CONTROL pair")
    runs: dict[str, dict] = {}
    out_pairs = []
    pooled: dict[str, tuple[dict, dict]] = {m: ({}, {}) for m in metrics}
    for i, (arm, control) in enumerate(pairs):
        loaded = {}
        for path in (arm, control):
            file = _results(path)
            results = json.loads(file.read_text())
            loaded[str(path)] = results
            summary = results["summary"].get(group)
            if summary is None:
                groups = sorted(results["summary"])
                raise ValueError(f"no group {group!r} in {file}; groups: {groups}")
            runs[str(path)] = {k: summary.get(k) for m in metrics for k in (m, f"{m}_lo", f"{m}_hi")}
        cells = {}
        for m in metrics:
            a = scene_values(loaded[str(arm)], group, m)
            c = scene_values(loaded[str(control)], group, m)
            cells[m] = paired(a, c, direction(m))
            pooled[m][0].update({(i, s): v for s, v in a.items()})
            pooled[m][1].update({(i, s): v for s, v in c.items()})
        out_pairs.append({"arm": str(arm), "control": str(control), "metrics": cells})
    return {
        "group": group,
        "runs": runs,
        "pairs": out_pairs,
        "pooled": {m: paired(a, c, direction(m)) for m, (a, c) in pooled.items()},
    }


def _fmt(value: float | None, lo: float | None, hi: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(value)} [{f.format(lo)}, {f.format(hi)}]"


def markdown(result: dict) -> str:
    """The comparison as markdown tables (runs, then differences arm - control)."""
    metrics = list(result["pooled"])
    digits = {m: 1 if m in ("pos_err_px", "loudness_diff_db") else 2 for m in metrics}
    head = "| {} | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics)
    lines = [f"{result['group']}, mean [95 % interval over scenes]", "", head.format("run")]
    for path, cells in result["runs"].items():
        row = [
            _fmt(cells[m], cells[f"{m}_lo"], cells[f"{m}_hi"], digits[m], sign=m == "loudness_diff_db")
            for m in metrics
        ]
        lines.append(f"| {path} | " + " | ".join(row) + " |")
    lines += ["", "arm - control, paired by scene: mean difference [95 % interval], n scenes", ""]
    lines.append(head.format("pair"))
    named = [(f"{p['arm']} - {p['control']}", p["metrics"]) for p in result["pairs"]]
    if len(result["pairs"]) > 1:
        named.append((f"pooled ({len(result['pairs'])} pairs)", result["pooled"]))
    for label, cells in named:
        row = [
            _fmt(cells[m]["diff"], cells[m]["diff_lo"], cells[m]["diff_hi"], digits[m], sign=True)
            + f" n={cells[m]['n']}"
            for m in metrics
        ]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _pair(text: str) -> tuple[Path, Path]:
    arm, sep, control = text.partition("=")
    if not sep or not arm or not control:
        raise argparse.ArgumentTypeError(f"expected ARM=CONTROL, got {text!r}")
    return Path(arm), Path(control)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train and score a DiT arm on a finished quickstart run's stages")
    train.add_argument("source", type=Path, help="a finished quickstart out_dir")
    train.add_argument("out", type=Path, help="the arm's out_dir")
    train.add_argument("overrides", nargs="*", help="appended to the source's dit_overrides")
    train.add_argument("--full-eval", action="store_true", help="the source's eval_overrides, not ARM_EVAL")
    cmp = sub.add_parser("compare", help="paired differences of arms against controls")
    cmp.add_argument("pairs", nargs="+", type=_pair, help="ARM=CONTROL: run folders or results.json files")
    cmp.add_argument("--group", default="generated/t2av")
    cmp.add_argument("--metrics", nargs="+", default=list(METRICS))
    cmp.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    args = parser.parse_args(argv)
    if args.command == "train":
        from sora.quickstart import run

        run(prepare_arm(args.source, args.out, args.overrides, full_eval=args.full_eval))
        return
    result = compare(args.pairs, group=args.group, metrics=tuple(args.metrics))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    sys.stdout.write(markdown(result) + "\n")


if __name__ == "__main__":
    main()
