"""The run folder every task shares: train.log, config.yaml (the resolved config: training from it again repeats
the run), run.json and classes.json, the task's data reports, the checkpoint saver and the results writer; and a
resumed run's check that it is the run being resumed."""

from __future__ import annotations

import sys

from tunecv import cli
from tunecv.config import save_config
from tunecv.report.manifest import write_run_manifest
from tunecv.resolve import Run
from tunecv.tasks.base import Task
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.loop import Pipeline, Results
from tunecv.train.resume import check_same_run
from tunecv.utils import distributed


def start_log(run: Run) -> None:
    """train.log in the run folder, once the data is found (a run that fails on its data leaves no log behind)."""
    if distributed.is_main():
        cli.add_log_file(run.out_dir / "train.log")


def open_run_folder(task: Task, run: Run, pipeline: Pipeline, argv: list[str]
                    ) -> tuple[CheckpointSaver, Results | None]:
    """Write the run's records and return what writes its checkpoints and results (results: None on every process
    but the first)."""
    cfg, datasets = run.cfg, [pipeline.train_set, pipeline.val_set]
    fingerprint = task.fingerprint(datasets)
    if run.checkpoint is not None:
        check_same_run(cfg, run.checkpoint, list(run.classes), fingerprint, force=run.resume_force)
    if distributed.is_main():
        task.write_data_reports(run, datasets)
        save_config(cfg, run.out_dir)
        write_run_manifest(run.out_dir, cfg, list(run.classes), fingerprint, [sys.argv[0], *argv],
                           world_size=run.world_size)
    train = cfg.train
    saver = CheckpointSaver(run.out_dir, cfg.model.model, cfg.to_flat(), list(run.classes),
                            keep_max=train.keep_checkpoint_max, policy=train.ckpt_save_policy,
                            interval=train.ckpt_save_interval, save_format=train.save_format,
                            meta={"data_fingerprint": fingerprint, **task.checkpoint_meta(pipeline.train_set)},
                            score_key=train.best_metric)
    return saver, task.create_results(run) if distributed.is_main() else None
