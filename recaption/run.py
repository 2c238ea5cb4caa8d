"""Recaption webdataset shards: ``python -m recaption.run input=SHARDS out_dir=DIR captioner=NAME``.

``captioner`` is one of ``ground_truth`` (the synthetic world's captions from its json), ``passthrough``,
``pixel`` (the weight-free captioner of the synthetic world) and ``hf`` (a vision-language model from a local
folder: ``captioner.model_path=/models/x``); its options are keys of ``captioner`` (``conf/captioner/``).

Per input shard one output shard of the same name (``shard-%06d.tar`` by position when two inputs share a
name) holds every sample in the same order with every file copied unchanged except: ``txt``, the new
caption, and ``json``, with ``caption_original``, ``captioner`` and ``captions`` added
(:func:`recaption.apply.recaptioned_meta`). Clips are decoded whole with PyAV (every frame, the sound at
its own rate) and captioned ``batch_size`` at a time.

Bad input never stops the job and is never silent: a clip the captioner fails on (an exception, an empty
or non-UTF-8 caption) keeps its original ``txt`` and json and is counted under ``kept_original`` with its
reason and named in ``failures``; a sample that cannot be decoded (a corrupt mp4, bad json, damaged tar
data) is left out of the output and counted and named under ``corrupt``.

Resumable: an output shard is written as ``*.tar.tmp`` and renamed when complete, with its counts in
``DIR/shard_reports/<name>.json``; a rerun skips every finished shard (it is never rewritten) and sums their
counts into the report. Parallel: ``num_workers`` processes take whole shards; ranks (``RANK`` /
``WORLD_SIZE`` as set by torchrun, or ``rank=`` / ``world_size=``) take the shards ``i % world_size == rank``,
each writing ``recaption_report.rank<r>.json`` (``recaption_report.json`` with one rank).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data_pipelines.av_samples import decode_whole_clip, parse_meta, read_caption
from data_pipelines.sample_errors import SampleError
from data_pipelines.shard_reader import expand_urls, read_shard
from data_pipelines.shard_writer import ShardWriter
from recaption.apply import FAILURE_REASONS, caption_clips, recaptioned_meta
from recaption.base import Captioner, CaptionInput
from recaption.registry import build_captioner, captioner_spec, check_captioner
from sora.config import CONF_DIR, save_resolved_config

log = logging.getLogger(__name__)

REPORTS_DIR = "shard_reports"
MAX_LISTED = 1000  # failures / corrupt samples named in the report (all of them are counted)
WHEN = ("always", "missing")


def output_names(urls: list[str]) -> dict[str, str]:
    """Each input's output shard name: its own file name, or ``shard-%06d.tar`` by position when two share
    one."""
    names = [u.rstrip("/").rsplit("/", 1)[-1] for u in urls]
    if len(set(names)) == len(names) and all(n.endswith(".tar") for n in names):
        return dict(zip(urls, names))
    return {u: f"shard-{i:06d}.tar" for i, u in enumerate(urls)}


def rank_shards(urls: list[str], rank: int, world_size: int) -> list[str]:
    """The shards rank ``rank`` of ``world_size`` takes: those at positions ``i % world_size == rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
    return [u for i, u in enumerate(urls) if i % world_size == rank]


def _clip(sample: dict, meta: dict, caption: str) -> CaptionInput:
    """The sample's decoded clip as a captioner sees it; raises SampleError / ValueError when it cannot be."""
    clip = decode_whole_clip(sample)
    return CaptionInput(
        frames=clip.video,
        audio=clip.audio,
        fps=clip.fps,
        sample_rate=int(clip.sample_rate or 0),
        meta=meta,
        caption=caption,
        key=str(sample["__key__"]),
    )


def recaption_shard(
    url: str, out_path: Path, captioner: Captioner, *, batch_size: int = 8, when: str = "always"
) -> dict:
    """Recaption one shard into ``out_path`` (atomically); return its counts (also written to
    ``<out_dir>/shard_reports/<name>.json`` before the shard is renamed into place)."""
    t0 = time.time()
    stats: dict = {
        "shard": out_path.name,
        "input": url,
        "samples": 0,
        "written": 0,
        "recaptioned": 0,
        "already_captioned": 0,
        "kept_original": dict.fromkeys(FAILURE_REASONS, 0),
        "corrupt": Counter(),
        "failures": [],
        "corrupt_samples": [],
    }

    def on_skip(reason: str, where: str, message: str) -> None:
        stats["corrupt"][reason] += 1
        stats["corrupt_samples"].append({"where": where, "reason": reason, "message": message[:300]})
        log.warning("recaption: %s %s: %s", reason, where, message)

    pending: list[tuple[dict, dict, str, CaptionInput | None]] = []

    def flush(writer: ShardWriter) -> None:
        todo = [clip for *_, clip in pending if clip is not None]
        outcomes = iter(caption_clips(captioner, todo))
        for sample, meta, caption, clip in pending:
            files = {k: v for k, v in sample.items() if not k.startswith("__")}
            if clip is not None:
                outcome = next(outcomes)
                if outcome.caption is not None:
                    new_meta = recaptioned_meta(meta, caption, captioner, outcome.caption)
                    files["json"] = json.dumps(new_meta).encode()
                    files["txt"] = outcome.caption.text.encode()
                    stats["recaptioned"] += 1
                else:
                    stats["kept_original"][outcome.reason] += 1
                    failure = {"key": clip.key, "reason": outcome.reason, "message": outcome.message}
                    stats["failures"].append(failure)
                    log.warning(
                        "recaption: %s keeps its caption (%s): %s", clip.key, outcome.reason, outcome.message
                    )
            writer.write(str(sample["__key__"]), files)
            stats["written"] += 1
        pending.clear()

    with ShardWriter(out_path) as writer:
        for sample in read_shard(url, on_skip):
            stats["samples"] += 1
            try:
                meta, caption = parse_meta(sample), read_caption(sample)
                clip = _clip(sample, meta, caption) if when == "always" or not caption else None
            except (SampleError, ValueError) as exc:
                reason = exc.reason if isinstance(exc, SampleError) else "decode_error"
                on_skip(reason, f"{url}:{sample['__key__']}", str(exc))
                continue
            if clip is None:  # when=missing and it has a caption: copied as it is, not decoded
                stats["already_captioned"] += 1
            pending.append((sample, meta, caption, clip))
            if sum(c is not None for *_, c in pending) >= batch_size:
                flush(writer)
        flush(writer)
        stats["corrupt"] = dict(stats["corrupt"])
        stats["seconds"] = round(time.time() - t0, 3)
        reports = out_path.parent / REPORTS_DIR
        reports.mkdir(exist_ok=True)
        tmp = reports / f"{out_path.name}.json.tmp"
        tmp.write_text(json.dumps(stats, indent=1))
        os.replace(tmp, reports / f"{out_path.name}.json")
    return stats


# ------------------------------------------------------------------------------------------ workers

_WORKER: dict = {}
BUILD_FAILED = "the captioner could not be built"


def _init_worker(captioner: Captioner | dict, settings: dict, one_thread: bool = True) -> None:
    import torch

    if one_thread:  # pool workers: one thread each, so they do not oversubscribe the cores
        torch.set_num_threads(1)
    _WORKER.update(captioner=None, build_error=None, **settings)
    if isinstance(captioner, dict):
        try:
            captioner = build_captioner(captioner["name"], **captioner["options"])
        except Exception as exc:  # noqa: BLE001 - raised in a pool initializer it would respawn workers forever
            _WORKER["build_error"] = f"{BUILD_FAILED}: {type(exc).__name__}: {exc}"
            return
    _WORKER["captioner"] = captioner


def _work(task: tuple[str, str]) -> dict:
    """Worker: one shard; a bug that escapes the per-clip handling fails this shard only (reported)."""
    url, out_path = task
    if _WORKER["build_error"]:
        return {"shard": Path(out_path).name, "input": url, "error": _WORKER["build_error"]}
    try:
        return recaption_shard(
            url, Path(out_path), _WORKER["captioner"], batch_size=_WORKER["batch_size"], when=_WORKER["when"]
        )
    except Exception as exc:  # noqa: BLE001 - the shard is left unwritten, a rerun tries it again
        return {"shard": Path(out_path).name, "input": url, "error": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------------------------------ the job


def recaption_shards(
    shards: str | list[str],
    out_dir: str | os.PathLike,
    captioner: Captioner | dict,
    *,
    batch_size: int = 8,
    when: str = "always",
    num_workers: int = 0,
    start_method: str = "fork",
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Recaption ``shards`` into ``out_dir``; returns (and writes) this rank's report.

    ``captioner``: a Captioner, or ``{"name": ..., "options": {...}}`` for :func:`build_captioner` (each
    worker process then builds its own; checked here first, so a bad name or model folder fails at once).
    """
    if batch_size < 1:
        raise ValueError(f"recaption: batch_size must be >= 1, got {batch_size}")
    if when not in WHEN:
        raise ValueError(f"recaption: captioner.when must be one of {list(WHEN)}, got {when!r}")
    if num_workers < 0:
        raise ValueError(f"recaption: num_workers must be >= 0, got {num_workers}")
    if isinstance(captioner, dict):
        check_captioner(captioner["name"], **captioner["options"])
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    urls = expand_urls(shards)
    names = output_names(urls)
    mine = rank_shards(urls, rank, world_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for url in mine:
        if Path(url).resolve() == (out / names[url]).resolve():
            raise ValueError(f"recaption: out_dir {out} holds the input {url}; write to another folder")
    todo = [u for u in mine if not (out / names[u]).exists()]
    done = [u for u in mine if u not in todo]
    if done:
        log.info("recaption: %d of %d shards already written in %s, skipped", len(done), len(mine), out)
    t0 = time.time()
    settings = {"batch_size": batch_size, "when": when}
    results: list[dict] = []
    tasks = [(u, str(out / names[u])) for u in todo]
    bar = tqdm(total=len(tasks), desc=f"recaption[rank {rank}]", unit="shard", disable=not progress)
    if num_workers > 0 and len(tasks) > 1:
        with mp.get_context(start_method).Pool(
            min(num_workers, len(tasks)), initializer=_init_worker, initargs=(captioner, settings)
        ) as pool:
            for stats in pool.imap_unordered(_work, tasks):
                results.append(stats)
                bar.update(1)
    elif tasks:
        # in this process: keep its threads (changing them changed later float results of the caller,
        # e.g. a test process's generated audio in the last bits)
        _init_worker(captioner, settings, one_thread=False)
        if _WORKER["build_error"]:
            raise ValueError(f"recaption: {_WORKER['build_error']}")
        for task in tasks:
            results.append(_work(task))
            bar.update(1)
    bar.close()
    describe = captioner if isinstance(captioner, dict) else captioner.describe()
    report = _report(out, urls, mine, names, done, results, describe, rank, world_size, time.time() - t0)
    name = "recaption_report.json" if world_size == 1 else f"recaption_report.rank{rank}.json"
    tmp = out / (name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / name)
    unbuilt = [f["error"] for f in report["shards_failed"] if f["error"].startswith(BUILD_FAILED)]
    if unbuilt:
        raise ValueError(f"recaption: {unbuilt[0]} (report: {out / name})")
    log.info(
        "recaption: %d samples, %d recaptioned, %d kept their caption %s, %d corrupt; report %s",
        report["samples"],
        report["recaptioned"],
        report["kept_original"],
        report["kept_original_reasons"],
        report["corrupt"],
        out / name,
    )
    return report


def _report(
    out: Path,
    urls: list[str],
    mine: list[str],
    names: dict[str, str],
    done: list[str],
    results: list[dict],
    captioner: dict,
    rank: int,
    world_size: int,
    seconds: float,
) -> dict:
    """This rank's counts over ALL its shards: written in this run, or before (from their shard reports)."""
    by_url = {r["input"]: r for r in results}
    kept, corrupt = Counter(dict.fromkeys(FAILURE_REASONS, 0)), Counter()
    totals = Counter()
    failures, corrupt_samples, per_shard, shard_errors, no_stats = [], [], [], [], []
    for url in mine:
        status = "written" if url in by_url else "skipped"
        stats = by_url.get(url)
        if stats is None:
            path = out / REPORTS_DIR / f"{names[url]}.json"
            stats = json.loads(path.read_text()) if path.exists() else None
            if stats is None:
                no_stats.append(names[url])
                per_shard.append({"shard": names[url], "input": url, "status": status})
                continue
        if "error" in stats:
            shard_errors.append({"shard": names[url], "input": url, "error": stats["error"]})
            per_shard.append({"shard": names[url], "input": url, "status": "failed"})
            log.error("recaption: shard %s failed and was not written: %s", url, stats["error"])
            continue
        for k in ("samples", "written", "recaptioned", "already_captioned"):
            totals[k] += stats[k]
        kept.update(stats["kept_original"])
        corrupt.update(stats["corrupt"])
        failures += [{"shard": names[url], **f} for f in stats["failures"]]
        corrupt_samples += [{"shard": names[url], **c} for c in stats["corrupt_samples"]]
        per_shard.append(
            {
                "shard": names[url],
                "input": url,
                "status": status,
                "samples": stats["samples"],
                "recaptioned": stats["recaptioned"],
                "kept_original": sum(stats["kept_original"].values()),
                "corrupt": sum(stats["corrupt"].values()),
            }
        )
    return {
        "input_shards": len(urls),
        "out_dir": str(out),
        "captioner": captioner,
        "rank": rank,
        "world_size": world_size,
        "shards": len(mine),
        "shards_written": sum(1 for p in per_shard if p["status"] == "written"),
        "shards_skipped": len(done),
        "shards_failed": shard_errors,
        "shards_without_report": no_stats,
        "samples": totals["samples"],
        "written": totals["written"],
        "recaptioned": totals["recaptioned"],
        "already_captioned": totals["already_captioned"],
        "kept_original": sum(kept.values()),
        "kept_original_reasons": dict(kept),
        "corrupt": sum(corrupt.values()),
        "corrupt_reasons": dict(sorted(corrupt.items())),
        "failures": failures[:MAX_LISTED],
        "corrupt_samples": corrupt_samples[:MAX_LISTED],
        "not_listed": max(0, len(failures) - MAX_LISTED) + max(0, len(corrupt_samples) - MAX_LISTED),
        "per_shard": per_shard,
        "seconds": round(seconds, 2),
    }


def run(cfg: DictConfig) -> dict:
    """The CLI: recaption ``cfg.input`` into ``cfg.out_dir`` (see the module docstring)."""
    spec = captioner_spec(cfg.captioner)
    check_captioner(spec["name"], **spec["options"])  # before any work: a wrong name or model folder
    _cuda_device_of_rank()
    save_resolved_config(cfg, cfg.out_dir, "recaption_config.yaml")
    return recaption_shards(
        OmegaConf.to_container(cfg.input) if OmegaConf.is_list(cfg.input) else str(cfg.input),
        cfg.out_dir,
        spec,
        batch_size=int(cfg.batch_size),
        when=str(cfg.captioner.get("when", "always")),
        num_workers=int(cfg.num_workers),
        start_method=str(cfg.start_method),
        rank=cfg.rank,
        world_size=cfg.world_size,
        progress=bool(cfg.progress),
    )


def _cuda_device_of_rank() -> None:
    """Under torchrun each rank's model goes to its own GPU (``cuda:LOCAL_RANK``)."""
    import torch

    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


@hydra.main(config_path=str(CONF_DIR), config_name="recaption", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
