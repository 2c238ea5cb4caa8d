"""The callback that puts a stream's skip counters in the run's logs and summary."""

from __future__ import annotations

import logging

import lightning as L

from data_pipelines.datamodules import StreamingDataModule

log = logging.getLogger(__name__)


class DataStatsCallback(L.Callback):
    """Logs what the data stream skipped, every step, and says it in the log when training ends.

    Metrics (this rank's counts): ``data/skipped`` (bad samples and shards, all reasons),
    ``data/skipped/<reason>`` per reason (``decode_error``, ``corrupt_tar``, ``shard_error``...),
    ``data/filtered`` (good samples no bucket takes), ``data/samples_consumed``, and ``data/val_skipped``
    after each validation; and the per-sample event counts of the consumed batches as ``data/<name>``:
    with ``caption_keys``, ``data/caption_form/<form>`` (samples trained on each caption form),
    ``data/caption_form_missing`` (drawn form absent: the txt was used) and
    ``data/caption_form_missing/<form>`` (see :mod:`data_pipelines.caption_forms`). Enabled in
    ``conf/callbacks/default.yaml``; does nothing for a DataModule that is not a stream.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict, batch_idx: int
    ) -> None:
        dm = trainer.datamodule
        if isinstance(dm, StreamingDataModule):
            p = dm.progress
            stats = {
                "data/skipped": float(sum(p.skipped.values())),
                "data/filtered": float(p.filtered),
                "data/samples_consumed": float(p.samples_consumed),
            }
            stats.update({f"data/skipped/{reason}": float(n) for reason, n in sorted(p.skipped.items())})
            stats.update({f"data/{name}": float(n) for name, n in sorted(p.counts.items())})
            pl_module.log_dict(stats, on_step=True, on_epoch=False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if isinstance(dm, StreamingDataModule) and not trainer.sanity_checking:
            skipped = float(sum(dm.val_progress.skipped.values()))
            pl_module.log("data/val_skipped", skipped, reduce_fx="sum", sync_dist=True)  # all ranks

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if isinstance(dm, StreamingDataModule):
            p = dm.progress
            log.info(
                "data (rank %d): %d samples consumed, %d skipped %s, %d filtered (no bucket takes them); "
                "validation skipped %s%s",
                trainer.global_rank,
                p.samples_consumed,
                sum(p.skipped.values()),
                dict(sorted(p.skipped.items())),
                p.filtered,
                dict(sorted(dm.val_progress.skipped.items())),
                f"; counts {dict(sorted(p.counts.items()))}" if p.counts else "",
            )
