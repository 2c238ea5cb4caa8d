"""How well the pixel captioner (recaption.pixel) reads the synthetic world: attribute accuracy vs the truth.

Generates held-out world clips (seeds ``--seed + i``, 900_000 by default, which no training set uses: those
draw ``clip_seed(seed, i)``, 63-bit hashes), families in turn, in the default world and in the quickstart's
world slice (``conf/quickstart.yaml`` ``world``); encodes each to mp4 and decodes it as shards are read;
captions the decoded frames and sound with ``meta={}`` (the captioner never sees the truth); parses the
``structured`` form back into facts and compares them per attribute with the ground truth:

* colour: ground-truth objects whose colour the caption names (and, beside it, ``spurious``: colours the
  caption names that are not in the clip);
* shape (small / medium+large): named objects whose noun (ball/box) is the true shape;
* left/right: named objects that start in the left or right third (not within 1.5 px of a border, where
  the world's captions do not say it either) and are put on that side;
* motion verb: named objects whose class (falls, thrown, slid, launched, pushed, rests) is the truth's; the
  truth's "pushed" is a resting object moved by more than ``max(2, r / 2)`` px, as the world's caption says;
  direction: movers whose direction is right;
* bounce count: named moving objects whose number of floor hits equals the truth's floor contacts;
* sound count: clips whose number of impacts equals the truth's contacts (``sound count``), and equals the
  contacts merged within 50 ms, what the ear can tell apart (``sound events``).

Each row: accuracy, n, and a 95 % bootstrap interval over clips (:func:`eval.stats.interval`, clustered by
clip). ``python -m benchmarks.pixel_captioner --clips 150 --quickstart-clips 60 --json out.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import yaml

from data_pipelines.synthetic import WorldConfig, generate_clip
from eval.av_sync import contact_times
from eval.stats import interval
from recaption.base import CaptionError, CaptionInput
from recaption.pixel import PixelCaptioner
from sora.media import encode_mp4, read_media

VERB_CLASS = {
    "falls": "falls",
    "thrown": "thrown",
    "slides": "slid",
    "rolls": "slid",
    "moves": "launched",
    "pushed": "pushed",
    "rests": "rests",
}
ROWS = (
    "colour",
    "spurious colour (per clip)",
    "shape (medium/large)",
    "shape (small)",
    "left/right",
    "position (3 thirds)",
    "motion verb",
    "motion direction",
    "bounce count",
    "bounce count +-1",
    "sound count",
    "sound events (merged 50 ms)",
    "silent clip said silent",
)
"""The table's rows, in order."""
_OBJECT = re.compile(r"(\w+) (ball|box) \(([^)]*)\)")


def parse_structured(text: str) -> tuple[dict[str, dict], int | None]:
    """``structured`` form -> ({colour: {shape, horizontal, verb, direction, bounces}}, impact count)."""
    objects_part, _, sounds_part = text.partition("; sounds: ")
    objects = {}
    for color, noun, inner in _OBJECT.findall(objects_part):
        fields = [f.strip() for f in inner.split(",")]
        verb_words = fields[1].split()
        bounces = next((int(f.split()[1]) for f in fields[2:] if f.startswith("bounces ")), 0)
        objects[color] = {
            "shape": "circle" if noun == "ball" else "box",
            "horizontal": fields[0],
            "verb": VERB_CLASS[verb_words[0]],
            "direction": verb_words[1] if len(verb_words) > 1 else None,
            "bounces": bounces,
        }
    sounds = sounds_part.strip()
    count = None if sounds == "no audio" else 0 if sounds == "none" else int(sounds.split()[0])
    return objects, count


def truth_objects(meta: dict) -> dict[str, dict]:
    """The ground truth per colour, in the attributes the structured form states."""
    start = {s["id"]: s for s in meta["start"]}
    tracks = {t["id"]: t for t in meta["tracks"]}
    width = float(meta["width"])
    out = {}
    for obj in meta["objects"]:
        i, track, role = obj["id"], tracks[obj["id"]], obj.get("role", "resting")
        moved = track["x"][-1] - track["x"][0]
        direction = None
        if role in ("thrown", "slid", "launched"):
            verb, direction = role, "right" if track["vx"][0] > 0 else "left"
        elif role == "dropped":
            verb = "falls"
        elif abs(moved) > max(2.0, 0.5 * float(obj["radius_px"])):
            verb, direction = "pushed", "right" if moved > 0 else "left"
        else:
            verb = "rests"
        x = track["x"][0] + 0.5
        on_border = min(abs(x - width / 3), abs(x - 2 * width / 3)) < 1.5
        floor = [c for c in meta["contacts"] if c["with"] == "floor" and i in c["objects"]]
        out[obj["color"]] = {
            "shape": obj["shape"],
            "size": obj["size"],
            "horizontal": None if on_border else start[i]["horizontal"],
            "verb": verb,
            "direction": direction,
            "bounces": len(floor) if role != "resting" else None,
        }
    return out


def score_clip(pred: dict[str, dict], count: int | None, meta: dict) -> dict[str, list[float]]:
    """Per attribute, the 0/1 outcomes of one clip."""
    truth = truth_objects(meta)
    rows: dict[str, list[float]] = defaultdict(list)
    for color, gt in truth.items():
        p = pred.get(color)
        rows["colour"].append(float(p is not None))
        if p is None:
            continue
        size_row = "shape (small)" if gt["size"] == "small" else "shape (medium/large)"
        rows[size_row].append(float(p["shape"] == gt["shape"]))
        if gt["horizontal"] in ("left", "right"):
            rows["left/right"].append(float(p["horizontal"] == gt["horizontal"]))
        if gt["horizontal"] is not None:
            rows["position (3 thirds)"].append(float(p["horizontal"] == gt["horizontal"]))
        rows["motion verb"].append(float(p["verb"] == gt["verb"]))
        if gt["direction"] is not None and p["verb"] == gt["verb"]:
            rows["motion direction"].append(float(p["direction"] == gt["direction"]))
        if gt["bounces"] is not None:
            rows["bounce count"].append(float(p["bounces"] == gt["bounces"]))
            rows["bounce count +-1"].append(float(abs(p["bounces"] - gt["bounces"]) <= 1))
    rows["spurious colour (per clip)"].append(float(any(c not in truth for c in pred)))
    if count is not None:
        rows["sound count"].append(float(count == len(meta["contacts"])))
        rows["sound events (merged 50 ms)"].append(float(count == len(contact_times(meta))))
        rows["silent clip said silent"].extend([float(count == 0)] if not meta["contacts"] else [])
    return rows


def run(worlds: list[tuple[str, WorldConfig, int]], seed: int) -> dict:
    results: dict[str, dict[str, list]] = {}
    failures = []
    for label, config, num_clips in worlds:
        captioner = PixelCaptioner(sizes=config.sizes, world_height_m=config.world_height_m)
        values: dict[str, list[float]] = defaultdict(list)
        clusters: dict[str, list[int]] = defaultdict(list)
        for i in range(num_clips):
            families = config.families
            clip = generate_clip(config, seed + i, families[i % len(families)])
            mp4 = encode_mp4(
                clip.video, clip.meta["fps"], clip.audio, clip.meta["sample_rate"], audio_bitrate=48_000
            )
            media = read_media(mp4)
            item = CaptionInput(
                frames=media.video,
                audio=media.audio,
                fps=media.fps,
                sample_rate=media.sample_rate or 0,
                meta={},
                key=clip.key,
            )
            try:
                caption = captioner.caption(item)
            except CaptionError as err:
                failures.append({"world": label, "key": clip.key, "error": str(err)})
                caption = None
            pred, count = parse_structured(caption.forms["structured"]) if caption else ({}, None)
            for name, outcomes in score_clip(pred, count, clip.meta).items():
                values[name] += outcomes
                clusters[name] += [i] * len(outcomes)
        results[label] = {name: _row(values[name], clusters[name]) for name in values}
    return {"results": results, "failures": failures}


def _row(values: list[float], clusters: list[int]) -> dict:
    iv = interval(values, clusters)
    return {"accuracy": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=150, help="default-world clips")
    parser.add_argument("--quickstart-clips", type=int, default=60, help="quickstart world-slice clips")
    parser.add_argument("--seed", type=int, default=900_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    quick = yaml.safe_load(Path("conf/quickstart.yaml").read_text())["world"]
    worlds = [("default world", WorldConfig(), args.clips)]
    if args.quickstart_clips:
        worlds.append(("quickstart slice", WorldConfig.from_dict(quick), args.quickstart_clips))
    start = time.time()
    out = run(worlds, args.seed)
    out["seconds"] = round(time.time() - start, 1)
    out["clips"] = {label: n for label, _, n in worlds}
    for label, rows in out["results"].items():
        print(f"\n{label} ({out['clips'][label]} clips, seeds {args.seed}..)")
        print("| attribute | accuracy | 95% interval | n |\n|---|---|---|---|")
        for name in ROWS:
            r = rows.get(name)
            if r is None or r["n"] == 0:
                print(f"| {name} | - | - | 0 |")
            else:
                print(f"| {name} | {r['accuracy']:.3f} | [{r['lo']:.3f}, {r['hi']:.3f}] | {r['n']} |")
    print(f"\nfailures (no object found): {len(out['failures'])}; {out['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
