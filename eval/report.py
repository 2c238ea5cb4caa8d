"""The suite's report: ``report.html`` (readable offline) from the ``results.json`` dict of :mod:`eval.suite`.

What it holds, top to bottom: the run (checkpoint, model hash, clip format), the summary tables (groups x the
headline numbers, then the diagnostic ones; each cell the mean, its 95 % bootstrap interval and n; the best
mean of each column highlighted), bar charts of the headline numbers with their intervals, paired win rates
against the ground truth and the baseline, the same numbers per scene family, every metric's mean per group,
the metric failures and skipped clips with their reasons, and every clip:
an ``<video controls>`` element plus a contact-sheet PNG (for viewers where video does not play).

Every asset is a file next to the report, referenced by a relative ``src="..."`` (no base64, no in-page
anchors), so the folder can be moved, zipped or re-rooted (the quickstart copies the page one level up and
prefixes every ``src="`` / ``href="``).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

HIGHER = "higher"
LOWER = "lower"
ZERO = "zero"  # 0 is best: compare |value|
NEUTRAL = "neutral"  # a count or a measured quantity with no better side

DIRECTIONS: dict[str, str] = {
    # numbers of earlier reports
    "spatial_accuracy": HIGHER,
    "spatial_pass_rate": HIGHER,
    "gravity_fit_rate": HIGHER,
    "onset_f1": HIGHER,
    "ftd": LOWER,
    "fvd": LOWER,
    "audio_fd": LOWER,
    # headline (eval.summary.HEADLINE) and the rest of eval.summary.SUMMARY
    "left_right_accuracy": HIGHER,
    "vertical_accuracy": HIGHER,
    "sync_f1": HIGHER,
    "sync_lag_s": ZERO,
    "dynamic_degree": HIGHER,
    "motion_smoothness": HIGHER,
    "colour_accuracy": HIGHER,
    "loudness_db": NEUTRAL,
    "loudness_diff_db": ZERO,
    "clip_score": HIGHER,
    "win_rate": HIGHER,
    # physics
    "pos_err_px": LOWER,
    "vel_err_px_s": LOWER,
    "vel_err_before_px_s": LOWER,
    "vel_err_after_px_s": LOWER,
    "shape_range_px": LOWER,
    "detection_rate": HIGHER,
    "gravity_fit": HIGHER,
    "gravity_fit_px_s2": NEUTRAL,
    "gravity_residual_px": LOWER,
    "free_flight_frames": NEUTRAL,
    "max_jump_ratio": LOWER,
    "teleports": LOWER,
    "no_teleport": HIGHER,
    "interpenetration": LOWER,
    "no_interpenetration": HIGHER,
    "max_restitution": NEUTRAL,
    "restitution_ok": HIGHER,
    "spatial_iou": HIGHER,
    "spatiotemporal_iou": HIGHER,
    "weighted_spatial_iou": HIGHER,
    "mse": LOWER,
    # spatial
    "spatial_score": HIGHER,
    "spatial_correct": HIGHER,
    "spatial_pass": HIGHER,
    "spatial_relations": NEUTRAL,
    # temporal
    "temporal_flickering": HIGHER,
    "warping_error": LOWER,
    "persistence": HIGHER,
    "persistence_breaks": LOWER,
    "object_count_error": LOWER,
    # sound
    "av_align": HIGHER,
    "audio_peaks": NEUTRAL,
    "video_peaks": NEUTRAL,
    "onset_precision": HIGHER,
    "onset_recall": HIGHER,
    "onset_abs_offset_s": LOWER,
    "onset_offset_s": ZERO,
    # reconstruction
    "psnr": HIGHER,
    "ssim": HIGHER,
    "lpips": LOWER,
    "mel_l1": LOWER,
    # bookkeeping
    "clips": NEUTRAL,
    "clips_failed": LOWER,
    "metric_errors": LOWER,
}
"""Which way is better for every key the registry's metrics and the suite report (module docstrings of
:mod:`eval`); unknown keys are neutral (never highlighted)."""

KIND_COLORS = {"generated": "#1f77b4", "baseline": "#ff7f0e", "prompts": "#9467bd", "ground_truth": "#2ca02c"}
BROKEN_COLOR = "#b0b0b0"

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; white-space: nowrap; }
td.best { background: #d8f5d0; font-weight: bold; }
tr.ground_truth td.name { color: #2ca02c; } tr.broken td.name { color: #888; }
.meta td { text-align: left; } .small { font-size: 0.8em; color: #666; }
.clips { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; padding: 6px; width: 300px; font-size: 0.78em; }
.card video { width: 256px; height: auto; image-rendering: pixelated; display: block; }
.card img { max-width: 288px; image-rendering: pixelated; display: block; margin-top: 4px; }
.card .label { font-weight: bold; margin-bottom: 3px; }
.caption { font-style: italic; color: #444; max-width: 1200px; }
.ci { font-size: 0.8em; color: #666; font-weight: normal; }
"""


# ---- helpers ----------------------------------------------------------------------------------------------


def direction(key: str) -> str:
    return DIRECTIONS.get(key, NEUTRAL)


def best_rows(values: list[float | None], way: str) -> set[int]:
    """Indices of the best finite values of a column (all ties), none for neutral keys or a single row."""
    finite = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if way == NEUTRAL or len(finite) < 2:
        return set()
    score = {HIGHER: lambda v: -v, LOWER: lambda v: v, ZERO: abs}[way]
    best = min(score(v) for _, v in finite)
    if all(math.isclose(score(v), best, rel_tol=1e-9, abs_tol=1e-12) for _, v in finite):
        return set()  # every row equal: nothing stands out
    return {i for i, v in finite if math.isclose(score(v), best, rel_tol=1e-9, abs_tol=1e-12)}


def fmt(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 10:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def group_kind(group: str) -> str:
    return group.split("/")[0]


def contact_sheet(
    video: np.ndarray, path: str | Path, max_frames: int = 8, columns: int = 4, min_width: int = 256
) -> Path:
    """A PNG grid (``columns`` wide) of up to ``max_frames`` evenly spaced frames of uint8 ``(T, H, W, 3)``
    video, upscaled with nearest neighbour to at least ``min_width`` pixels; frames 1 pixel apart."""
    from PIL import Image

    video = np.asarray(video)
    t, h, w, _ = video.shape
    idx = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
    cols = min(columns, len(idx))
    rows, gap = math.ceil(len(idx) / cols), 1
    sheet = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for j, i in enumerate(idx):
        r, c = divmod(j, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = video[i]
    scale = max(1, math.ceil(min_width / sheet.shape[1]))
    img = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def plot_summary(summary: dict[str, dict], numbers: list[str], path: str | Path) -> Path | None:
    """Bar charts, one panel per summary number, one bar per group (colour by kind) with its 95 % interval as
    a whisker; ``None`` if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [n for n in numbers if any(_finite(row.get(n)) for row in summary.values())]
    if not numbers or not summary:
        return None
    groups = list(summary)
    cols = min(3, len(numbers))
    rows = math.ceil(len(numbers) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 0.28 * len(groups) * rows + 1.2 * rows), squeeze=False
    )
    colors = [KIND_COLORS.get(group_kind(g), BROKEN_COLOR) for g in groups]
    for ax, number in zip(axes.flat, numbers):
        vals = [summary[g].get(number) for g in groups]
        y = np.arange(len(groups))
        ax.barh(y, [v if _finite(v) else 0.0 for v in vals], color=colors)
        for yi, g, v in zip(y, groups, vals):  # the 95 % interval as a whisker
            lo, hi = summary[g].get(f"{number}_lo"), summary[g].get(f"{number}_hi")
            if _finite(v) and _finite(lo) and _finite(hi):
                ax.plot([lo, hi], [yi, yi], color="black", linewidth=1)
        for yi, v in zip(y, vals):
            ax.text(0, yi, f" {fmt(v)}", va="center", fontsize=7)
        ax.set_yticks(y, groups, fontsize=7)
        positive = [v for v in vals if _finite(v) and v > 0]
        if positive and max(positive) > 100 * min(positive):
            ax.set_xscale("symlog", linthresh=min(positive))  # e.g. FTD spans orders of magnitude
        ax.invert_yaxis()
        way = direction(number)
        ax.set_title(f"{number} ({way} is better)" if way != NEUTRAL else number, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(numbers) :]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


# ---- HTML --------------------------------------------------------------------------------------------------


def _table(rows: dict[str, dict], columns: list[str], *, header_title: str = "group") -> str:
    """Groups x columns with the best value of each column highlighted."""
    names = list(rows)
    best = {c: best_rows([rows[n].get(c) for n in names], direction(c)) for c in columns}
    out = ["<table>", f'<tr><th class="name">{header_title}</th>']
    for c in columns:
        way = direction(c)
        arrow = {HIGHER: " &uarr;", LOWER: " &darr;", ZERO: " &rarr;0"}.get(way, "")
        out.append(f"<th>{html.escape(c)}{arrow}</th>")
    out.append("</tr>")
    for i, name in enumerate(names):
        out.append(f'<tr class="{html.escape(group_kind(name))}"><td class="name">{html.escape(name)}</td>')
        for c in columns:
            cls = ' class="best"' if i in best[c] else ""
            out.append(f"<td{cls}>{fmt(rows[name].get(c))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _interval_table(rows: dict[str, dict], columns: list[str], *, header_title: str = "group") -> str:
    """Groups x summary numbers, each cell ``mean [lo, hi]`` with ``n`` (and how many clips it was undefined
    for); the best mean of each column highlighted. Columns without companions (set-level distances) show the
    value alone."""
    names = list(rows)
    best = {c: best_rows([rows[n].get(c) for n in names], direction(c)) for c in columns}
    out = ["<table>", f'<tr><th class="name">{header_title}</th>']
    for c in columns:
        arrow = {HIGHER: " &uarr;", LOWER: " &darr;", ZERO: " &rarr;0"}.get(direction(c), "")
        out.append(f"<th>{html.escape(c)}{arrow}</th>")
    out.append("</tr>")
    for i, name in enumerate(names):
        row = rows[name]
        out.append(f'<tr class="{html.escape(group_kind(name))}"><td class="name">{html.escape(name)}</td>')
        for c in columns:
            cls = ' class="best"' if i in best[c] else ""
            text = fmt(row.get(c))
            if f"{c}_n" in row:
                text += f'<br><span class="ci">[{fmt(row.get(f"{c}_lo"))}, {fmt(row.get(f"{c}_hi"))}]'
                text += f" n={row[f'{c}_n']}"
                if row.get(f"{c}_undefined"):
                    text += f", {row[f'{c}_undefined']} undef."
                text += "</span>"
            out.append(f"<td{cls}>{text}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _paired_table(paired: dict[str, dict], numbers: list[str]) -> str:
    """Win rate of each group against each of its references, per summary number: ``rate [lo, hi] n``."""
    out = ['<table><tr><th class="name">group</th><th class="name">against</th>']
    columns = [n for n in numbers if any(n in cells for refs in paired.values() for cells in refs.values())]
    out.extend(f"<th>{html.escape(n)}</th>" for n in columns)
    out.append("</tr>")
    for group, refs in paired.items():
        for ref, cells in refs.items():
            out.append(
                f'<tr class="{html.escape(group_kind(group))}"><td class="name">{html.escape(group)}</td>'
                f'<td class="name">{html.escape(ref)}</td>'
            )
            for n in columns:
                c = cells.get(n) or {}
                if c.get("n"):
                    out.append(
                        f'<td>{fmt(c.get("win_rate"))}<br><span class="ci">[{fmt(c.get("win_rate_lo"))}, '
                        f"{fmt(c.get('win_rate_hi'))}] n={c['n']}</span></td>"
                    )
                else:
                    out.append("<td>-</td>")
            out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _clip_card(clip: dict, numbers: list[str]) -> str:
    label = html.escape(clip["group"])
    parts = [f'<div class="card"><div class="label">{label}</div>']
    if clip.get("video"):
        parts.append(f'<video controls preload="metadata" src="{html.escape(clip["video"])}"></video>')
    if clip.get("sheet"):
        parts.append(f'<img alt="frames of {label}" src="{html.escape(clip["sheet"])}">')
    if clip.get("error"):
        parts.append(f'<div class="small">not scored: {html.escape(clip["error"])}</div>')
    values = clip.get("metrics", {})
    shown = [f"{n}={fmt(values.get(n))}" for n in numbers if n in values]
    if shown:
        parts.append(f'<div class="small">{html.escape(", ".join(shown))}</div>')
    if clip.get("failures"):
        failed = ", ".join(sorted(clip["failures"]))
        parts.append(f'<div class="small">not measured: {html.escape(failed)}</div>')
    parts.append("</div>")
    return "".join(parts)


CARD_KEYS = [
    "left_right_accuracy",
    "persistence",
    "detection_rate",
    "sync_f1",
    "pos_err_px",
    "dynamic_degree",
    "colour_accuracy",
    "onset_f1",
]
"""Per-clip values printed under each clip."""


def render_html(results: dict, plot: str | None) -> str:
    """The report page for ``results`` (see :func:`eval.suite.run`); ``plot`` is a relative PNG path."""
    summary: dict[str, dict] = results.get("summary", {})
    numbers: list[str] = results.get("summary_numbers", [])
    groups: dict[str, dict] = results.get("groups", {})
    fmt_info = results.get("format", {})
    title = f"sora eval: suite {results.get('suite', '?')}"
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<table class="meta">',
    ]
    info = {
        "checkpoint": results.get("checkpoint"),
        "model config hash": results.get("model_config_hash"),
        "baseline checkpoint": results.get("baseline_checkpoint"),
        "baseline config hash": results.get("baseline_config_hash"),
        "clip format": (
            f"{fmt_info.get('num_frames')} frames at {fmt_info.get('fps')} fps, "
            f"{fmt_info.get('width')}x{fmt_info.get('height')}"
        ),
        "scenes": results.get("num_scenes"),
        "created": results.get("created"),
    }
    for k, v in info.items():
        if v is not None:
            out.append(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>")
    out.append("</table>")
    out.append(
        '<p class="small">All numbers and clips are in <a href="results.json">results.json</a>. Ground truth '
        "is the upper anchor, broken copies of it (<code>eval/broken.py</code>) the lower one. Generated "
        "clips are shown with their visible watermark and scored without it (the mark is white, a palette "
        "colour the object tracker would see); every scored clip went through one H.264/AAC round trip.</p>"
    )

    out.append("<h2>Summary</h2>")
    descriptions = results.get("summary_descriptions", {})
    if descriptions:
        out.append('<ul class="small">')
        for k, d in descriptions.items():
            out.append(f"<li><b>{html.escape(k)}</b>: {html.escape(d)}</li>")
        out.append("</ul>")
    headline = [n for n in results.get("headline", []) if n in numbers]
    rest = [n for n in numbers if n not in headline]
    out.append(
        '<p class="small">Each cell: the mean over the group\'s clips, its 95 % bootstrap interval (2000 '
        "resamples of the scenes, seed 0; <code>eval/stats.py</code>) and n, the clips where the number is "
        "defined; clips where it is undefined are counted, never dropped silently.</p>"
    )
    if headline:
        out.append("<h3>Headline</h3>")
        out.append(_interval_table(summary, headline))
    if rest:
        out.append("<h3>Diagnostics</h3>")
        out.append(_interval_table(summary, [*rest, "clips", "clips_failed", "metric_errors"]))
    if plot:
        out.append(f'<p><img alt="summary numbers per group" src="{html.escape(plot)}"></p>')
    paired = results.get("paired") or {}
    if paired:
        out.append("<h2>Paired comparison (win rate, scene by scene)</h2>")
        out.append(
            '<p class="small">The fraction of scenes where the group beats the reference on the number (ties '
            "count one half), with its 95 % scene-bootstrap interval and the number of scenes both have.</p>"
        )
        out.append(_paired_table(paired, headline or numbers))
    families = results.get("families") or {}
    if any(len(f) > 1 for f in families.values()):
        out.append("<h2>Per family</h2>")
        for group, rows in families.items():
            out.append(f"<h3>{html.escape(group)}</h3>")
            out.append(_interval_table(rows, headline or numbers, header_title="family"))

    keys = sorted({k for g in groups.values() for k in g.get("mean", {})})
    if keys:
        out.append("<h2>Every metric (mean over clips)</h2>")
        out.append(_table({g: v.get("mean", {}) for g, v in groups.items()}, keys))

    failures = results.get("failures", {})
    out.append("<h2>Metric failures and skipped clips</h2>")
    rows = failures.get("by_group_metric", [])
    if rows:
        out.append('<table><tr><th class="name">group</th><th class="name">metric</th><th>kind</th>')
        out.append('<th>clips</th><th class="name">example reason</th></tr>')
        for r in rows:
            out.append(
                f'<tr><td class="name">{html.escape(r["group"])}</td><td class="name">'
                f"{html.escape(r['metric'])}</td><td>{html.escape(r['kind'])}</td><td>{r['count']}</td>"
                f'<td class="name">{html.escape(r["reason"])}</td></tr>'
            )
        out.append("</table>")
    else:
        out.append("<p>Every metric ran on every clip.</p>")
    for r in failures.get("distribution", []):
        out.append(
            f'<p class="small">set-level {html.escape(r["metric"])} not computed for '
            f"{html.escape(r['group'])}: {html.escape(r['reason'])}</p>"
        )
    skipped = results.get("skipped", [])
    if skipped:
        out.append('<table><tr><th class="name">clip</th><th class="name">reason</th></tr>')
        for s in skipped:
            out.append(
                f'<tr><td class="name">{html.escape(s["id"])}</td>'
                f'<td class="name">{html.escape(s["reason"])}</td></tr>'
            )
        out.append("</table>")

    out.append("<h2>Clips</h2>")
    by_scene: dict[str, list[dict]] = {}
    for clip in results.get("clips", []):
        by_scene.setdefault(str(clip.get("scene_id", "")), []).append(clip)
    for scene_id, clips in by_scene.items():
        first = clips[0]
        head = f"{scene_id}: {first.get('family') or ''} (world seed {first.get('seed')})"
        out.append(f"<h3>{html.escape(head)}</h3>")
        out.append(f'<p class="caption">{html.escape(first.get("prompt") or "")}</p>')
        out.append('<div class="clips">')
        out.extend(_clip_card(c, CARD_KEYS) for c in clips)
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(results: dict, out_dir: str | Path) -> Path:
    """Write ``report.html`` (and ``plots/summary.png``) into ``out_dir``; returns the page's path."""
    out_dir = Path(out_dir)
    numbers = results.get("headline") or results.get("summary_numbers", [])
    plot = plot_summary(results.get("summary", {}), numbers, out_dir / "plots" / "summary.png")
    rel = plot.relative_to(out_dir).as_posix() if plot else None
    page = out_dir / "report.html"
    page.write_text(render_html(results, rel), encoding="utf-8")
    return page
