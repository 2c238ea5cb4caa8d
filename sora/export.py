"""Export a trained AV-DiT checkpoint to a folder: ``python -m sora.export checkpoint=CKPT out_dir=DIR``.

The folder is self-contained: one ``<network>.safetensors`` per network (EMA weights by default, floating
tensors of the DiT and a trained text encoder optionally cast with ``dtype=bf16``), a frozen Hugging Face text
encoder copied into ``text_encoder/`` with its tokenizer and licence files (or only named, with
``text_encoder=reference``), ``config.json`` (see :mod:`sora.export_format`) and a ``README.md`` model card
(training data and steps, config hash, versions, and the headline table of an eval ``results.json`` when
given). ``checkpoint`` is a Lightning ``.ckpt`` or a sharded checkpoint folder (FSDP ``state_dict_type=
sharded``), consolidated here. It loads with ``sora.pipeline.AVPipeline.from_pretrained(folder)`` without
Lightning or Hydra and without executing code named in the files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

import sora
from sora.checkpoint import HF_TEXT_ENCODER, refuse_remote, save_safetensors
from sora.config import CONF_DIR
from sora.export_format import CAST_NETWORKS, FORMAT, dtype_name, parse_dtype

TEXT_ENCODER_MODES = ("bundle", "reference")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _float_dtype(module: torch.nn.Module) -> torch.dtype:
    return next((t.dtype for t in module.state_dict().values() if t.is_floating_point()), torch.float32)


def versions(with_transformers: bool = False) -> dict[str, str]:
    import safetensors

    out = {"sora": sora.__version__, "torch": torch.__version__, "safetensors": safetensors.__version__}
    if with_transformers:
        import transformers

        out["transformers"] = transformers.__version__
    return out


def run_data_summary(checkpoint: Path) -> dict[str, Any]:
    """The data section of the run's resolved ``config.yaml`` (``<run>/checkpoints/<ckpt>`` -> ``<run>``)."""
    from omegaconf import OmegaConf

    for run_dir in (checkpoint.parent.parent, checkpoint.parent):
        path = run_dir / "config.yaml"
        if path.is_file():
            cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            data = cfg.get("data") or {}
            keep = ("_target_", "train_urls", "buckets", "batch_size", "caption_mix")
            return {
                "run_config": str(path),
                "task": cfg.get("task"),
                "seed": cfg.get("seed"),
                **{k: data[k] for k in keep if k in data},
            }
    return {}


def eval_summary(results: str | Path) -> dict[str, Any]:
    """Headline of an eval ``results.json``: per group its summary numbers (and ``_lo``/``_hi``/``_n``)."""
    path = Path(results)
    res = json.loads(path.read_text())
    summary = res.get("summary")
    if not isinstance(summary, dict) or not summary:
        raise ValueError(f"{path} has no 'summary' table (is it an eval suite results.json?)")
    numbers = res.get("summary_numbers") or sorted(
        {k for row in summary.values() for k in row if not k.endswith(("_lo", "_hi", "_n"))}
    )
    return {
        "results": str(path),
        "suite": res.get("suite"),
        "num_scenes": res.get("num_scenes"),
        "model_config_hash": res.get("model_config_hash"),
        "numbers": list(numbers),
        "summary": summary,
    }


def _cell(row: dict, name: str) -> str:
    v = row.get(name)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "-"
    s = f"{v:.3g}"
    lo, hi, n = row.get(f"{name}_lo"), row.get(f"{name}_hi"), row.get(f"{name}_n")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        s += f" [{lo:.3g}, {hi:.3g}]"
    if isinstance(n, int):
        s += f" (n={n})"
    return s


def _eval_section(ev: dict, model_hash: str) -> str:
    if not ev:
        return "No evaluation results were given (`python -m sora.export ... results=eval/results.json`).\n"
    nums = ev["numbers"]
    lines = [
        f"Suite `{ev['suite']}`, {ev['num_scenes']} scene(s), from `{ev['results']}`; "
        "brackets: bootstrap 95% interval where the suite gives one.",
        "",
        "| group | " + " | ".join(nums) + " |",
        "|---|" + "---|" * len(nums),
        *(f"| {g} | " + " | ".join(_cell(row, n) for n in nums) + " |" for g, row in ev["summary"].items()),
    ]
    if ev.get("model_config_hash") and ev["model_config_hash"] != model_hash:
        lines += [
            "",
            f"**Note:** these results are for model config `{ev['model_config_hash']}`, not this one.",
        ]
    return "\n".join(lines) + "\n"


def model_card(manifest: dict, params: dict[str, int]) -> str:
    s, t, v = manifest["sampling"], manifest.get("training") or {}, manifest["versions"]
    rows = "\n".join(
        f"| `{n}` | `{manifest['networks'][n]['_target_']}` | {params[n] / 1e6:.2f} M | "
        f"{manifest['dtypes'].get(n, 'its own (see below)')} |"
        for n in params
    )
    data = t.get("data") or {}
    run = t.get("run") or {}
    data_lines = [
        f"- steps: {t.get('global_step', 'not recorded')}, epoch: {t.get('epoch', 'not recorded')}",
        f"- data: `{run.get('_target_', 'not recorded')}` from `{run.get('train_urls', 'not recorded')}`"
        + (f" (task `{run['task']}`, seed {run.get('seed')})" if run.get("task") else ""),
    ]
    if data:
        data_lines.append(
            f"- samples consumed: {data['samples_consumed']} (data epoch {data['data_epoch']}, world size "
            f"{data['world_size']}); skipped: {data['skipped'] or 'none'}; filtered: {data['filtered']}"
        )
    te = manifest.get("text_encoder_source")
    if te:
        where = (
            f"bundled in `{manifest['networks']['text_encoder']['path']}/`"
            if te["mode"] == "bundled"
            else "**not bundled**: load with `AVPipeline.from_pretrained(folder, text_encoder_path=DIR)`"
        )
        te_text = (
            f"Frozen Hugging Face encoder `{te.get('repo_id') or te['source_path']}` (revision "
            f"`{te.get('revision') or 'unknown'}`, class `{te['class']}`), {where}.\n"
            f"Licence: {te['license']}. Weights fingerprint (sha256): `{te['fingerprint']}`.\n"
        )
    else:
        te_text = "Trained with the DiT (weights in `text_encoder.safetensors`).\n"
    folder = manifest.get("folder", ".")
    return f"""# AV-DiT export

Generated by sora {v["sora"]} (torch {v["torch"]}) from `{manifest["source"]}`
({"EMA" if manifest["ema"] else "raw"} weights). Model config hash: `{manifest["model_config_hash"]}`.

| network | class | parameters | stored dtype |
|---|---|---|---|
{rows}

Trained clip format: {s["num_frames"]} frames at {s["fps"]} fps, {s["height"]}x{s["width"]}, \
audio {s["sample_rate"]} Hz mono.

## Training

{chr(10).join(data_lines)}

## Text encoder

{te_text}
## Evaluation

{_eval_section(manifest.get("eval") or {}, manifest["model_config_hash"])}
## Use

```bash
python sample.py checkpoint={folder} prompt="a red ball falls and bounces"
```

```python
from sora.pipeline import AVPipeline, GenerationRequest
pipe = AVPipeline.from_pretrained("{folder}", dtype="bf16", device="cuda")
clip = pipe.generate(GenerationRequest(prompt="a red ball falls and bounces", seed=0))
```

## Intended use and limitations

A research checkpoint. Generated clips carry a visible watermark and provenance metadata
(`python -m sora.safety verify clip.mp4`); prompts pass the configurable safety filter of `sample.py`.
Quality is bounded by the training data: a model trained on the synthetic physics world only knows
coloured shapes that fall, slide and collide.
"""


def export(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    use_ema: bool = True,
    dtype: torch.dtype | str | None = None,
    text_encoder: str = "bundle",
    text_encoder_repo: str | None = None,
    text_encoder_revision: str | None = None,
    results: str | Path | None = None,
) -> Path:
    """Write the export folder for a DiT-stage checkpoint (``.ckpt`` or sharded folder); returns the folder.

    ``dtype``: store the DiT's and a trained text encoder's floating tensors in this dtype (VAEs: float32).
    ``text_encoder``: ``bundle`` copies a frozen Hugging Face encoder into the folder; ``reference`` names it
    (``text_encoder_repo`` / ``text_encoder_revision``, else read from a hub cache path or its config).
    ``results``: an eval suite ``results.json`` whose headline table goes into the model card.
    """
    from sora.pipeline import NETWORKS, AVPipeline
    from sora.text_encoder_files import bundle, describe_source

    refuse_remote(checkpoint)
    if text_encoder not in TEXT_ENCODER_MODES:
        raise ValueError(f"text_encoder must be one of {TEXT_ENCODER_MODES}, got {text_encoder!r}")
    dtype = parse_dtype(dtype)
    ev = eval_summary(results) if results else {}
    pipe = AVPipeline.from_checkpoint(checkpoint, use_ema=use_ema, autocast_dtype=None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params, dtypes, networks, te_source = {}, {}, dict(pipe.configs), None
    for name in NETWORKS:
        net = getattr(pipe, name)
        stale = out / f"{name}.safetensors"
        if net is None:
            stale.unlink(missing_ok=True)
            continue
        params[name] = _count(net) + (_count(net.model) if hasattr(net, "model") else 0)
        if networks[name].get("_target_") == HF_TEXT_ENCODER:
            stale.unlink(missing_ok=True)
            te_source = describe_source(net.path, net.model, text_encoder_repo, text_encoder_revision)
            if text_encoder == "bundle":
                networks[name] = {**networks[name], "path": bundle(net, out, te_source)}
            te_source["mode"] = "bundled" if text_encoder == "bundle" else "reference"
            continue
        cast = dtype if name in CAST_NETWORKS else None
        save_safetensors(net, stale, metadata={"format": "pt", "network": name}, dtype=cast)
        dtypes[name] = dtype_name(cast or _float_dtype(net))
    training = {**pipe.training_info, "run": run_data_summary(Path(checkpoint))}
    manifest = {
        "format": FORMAT,
        "sora_version": sora.__version__,
        "versions": versions(with_transformers=te_source is not None),
        "source": str(checkpoint),
        "ema": use_ema,
        "networks": networks,
        "dtypes": dtypes,
        "sampling": pipe.sampling,
        "flow": pipe.flow,
        "model_config_hash": pipe.config_hash,
        "training": training,
        "text_encoder_source": te_source,
        "eval": ev or None,
    }
    (out / "config.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (out / "README.md").write_text(model_card({**manifest, "folder": str(out)}, params))
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = export(
        cfg.checkpoint,
        cfg.out_dir,
        use_ema=cfg.use_ema,
        dtype=cfg.get("dtype"),
        text_encoder=cfg.get("text_encoder", "bundle"),
        text_encoder_repo=cfg.get("text_encoder_repo"),
        text_encoder_revision=cfg.get("text_encoder_revision"),
        results=cfg.get("results"),
    )
    print(f"exported to {out}")


if __name__ == "__main__":
    main()
